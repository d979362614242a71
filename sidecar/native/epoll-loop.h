// The sidecar's native data path: one epoll loop on its own thread that accepts client
// connections, connects each to the upstream and moves bytes both ways: with plain read/send
// through one shared buffer while messages are small, and through a pipe with splice (no copy
// into or out of user space) once a direction turns bulk, the way HAProxy's TCP mode with
// splice-auto does. JavaScript keeps everything else
// (flags, stats port, fence, logs); it reads the counters from a Float64Array this loop writes
// and hears about rare events (an unreachable upstream, the listener closed, drained) through a
// thread-safe function.
//
// This header and epoll-loop.cc are the loop, with no Node-API in them; napi-binding.cc makes it
// an addon: it unpacks the JavaScript arguments, hands the loop's events (Engine::post) to the
// thread-safe function and registers the module. scripts/build-native.ts builds both into
// build/native/proxy-engine.node.
//
// Why native: the same rules in JavaScript on Node's sockets (sidecar/proxy.ts) spent several
// times HAProxy's user CPU per round trip and per connection in Node's callback machinery, which
// left latency and connection churn behind HAProxy (docs/benchmarks.md has the measurements).
// Here a round trip costs four system calls and no allocation.
//
// The rules are those of sidecar/proxy.ts:
// - half-close: end of stream from one peer becomes a shutdown(SHUT_WR) towards the other once
//   everything read before it is sent; the other direction keeps flowing;
// - anything else (a read or send error, a reset, an unreachable upstream, the end of the grace
//   period) resets both sides (SO_LINGER 0), so neither peer mistakes a failure for a clean end;
// - backpressure: what the destination's kernel buffer does not take at once is kept in a
//   per-direction buffer (or stays in the direction's pipe) and the source is not read until it
//   is sent, so the proxy holds at most one read (kReadBytes) per direction;
// - a direction turns bulk after kFullReadsToSplice reads in a row that fill the read buffer,
//   and goes back to copying after a run of passes that each moved only a small message; bytes are
//   counted when they leave the source either way (kSplicedBytes says how many went by pipe);
// - the client is not read before the upstream is connected (its bytes wait in its kernel buffer);
// - stopping accepting resets nobody who connected: the listener first refuses new handshakes
//   (a socket filter drops bare SYNs), stays open a moment for the handshakes under way, then
//   takes every client queued in its backlog, in one go, and only then closes: a listener closed
//   with clients queued, or with a handshake it answered still completing, resets them;
// - a handoff (HandOff) switches the upstream of new connections, which count in kHandedOff.
//
// Thread safety: the loop thread owns every socket and connection. The JavaScript thread only
// creates the listening socket (before the loop sees it), sets command bits and wakes the loop
// through an eventfd, hands it a handoff address under a mutex, and reads the counters (8-byte
// aligned stores and loads, each atomic on the platforms Node supports). The functions declared at the end of this header are the ones
// the JavaScript thread calls; everything else in epoll-loop.cc runs on the loop thread.
#ifndef SIDECAR_NATIVE_EPOLL_LOOP_H_
#define SIDECAR_NATIVE_EPOLL_LOOP_H_

#include <sys/socket.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace proxy_engine {

constexpr size_t kReadBytes = 64 * 1024;

// Layout of the counters the JavaScript side reads (Float64Array).
enum Counter {
  kOpen,
  kOpened,
  kClosed,
  kBytesIn,
  kBytesOut,
  kLastActivityMs,
  kUpstreamFailures,
  kPendingBytes,
  kBuffersInUse,
  kBuffersIdle,
  kHandedOff,
  // odd while an accept is under way (from accept4 until the counters include the client), so
  // a reader of the backlog and the counters can tell it did not miss one in between
  kAcceptSeq,
  // bytes of kBytesIn and kBytesOut that went through a pipe (splice) rather than the read buffer
  kSplicedBytes,
  kPipesInUse,
  kPipesIdle,
  kCounterCount,
};

enum Command : uint32_t {
  kStopAccepting = 1,
  kDestroyAll = 2,
  kExit = 4,
  // the address in Engine::handoff becomes the upstream of new connections
  kHandOff = 8,
};

enum EventKind {
  kEventUpstreamFailure,
  kEventClosed,
  kEventListenerError,
  kEventStoppedAccepting,
  kEventDrained,
  kEventAcceptingAgain,
};

struct Event {
  EventKind kind;
  std::string reason;
  std::string peer;
  double ms = 0;
  double bytesIn = 0;
  double bytesOut = 0;
};

// both defined in epoll-loop.cc: only the loop looks inside them
struct Side;
struct Connection;

// A pipe a bulk direction's bytes pass through (splice), pooled once empty.
struct Pipe {
  int read = -1;
  int write = -1;
};

struct Engine {
  // How the loop's events reach the JavaScript side, called on the loop thread: set by whoever
  // makes the engine, and from then on it owns the event (it deletes one it cannot deliver).
  void (*post)(Engine* engine, Event* event) = nullptr;
  double* counters = nullptr;

  sockaddr_storage upstream{};
  socklen_t upstreamLength = 0;
  int64_t connectTimeoutMs = 10000;
  bool debug = false;

  int epoll = -1;
  int wake = -1;
  std::atomic<int> listener{-1};
  std::atomic<uint32_t> commands{0};
  std::atomic<bool> watchDrain{false};
  std::thread thread;
  bool running = false;
  bool joined = false;
  // the handoff address, written by the JavaScript thread (HandOff) and taken by the loop
  std::mutex handoffMutex;
  sockaddr_storage handoff{};
  socklen_t handoffLength = 0;

  // loop-thread state
  char readBuffer[kReadBytes];
  std::vector<char*> idleBuffers;
  double buffersInUse = 0;
  std::vector<Pipe> idlePipes;
  double pipesInUse = 0;
  // splice failed as unsupported for sockets here (EINVAL and the like) before it ever worked:
  // every direction copies from then on; once one worked, such an error is the connection's
  bool spliceUnsupported = false;
  bool spliceWorked = false;
  double pendingBytes = 0;
  Connection* all = nullptr;
  Connection* connectingHead = nullptr;
  Connection* connectingTail = nullptr;
  Connection* dead = nullptr;
  // closed connections kept for reuse: never freed while the loop runs (see Tag)
  Connection* spare = nullptr;
  // sides still readable after their share of reads in one pass (Queue)
  Side* queuedHead = nullptr;
  Side* queuedTail = nullptr;
  size_t queuedCount = 0;
  int64_t acceptPausedUntil = 0;
  bool acceptPaused = false;
  // out of file descriptors (or kernel memory) since acceptFailingSinceMs: reported once when it
  // starts and once the backlog is empty again, not on every retry (PauseAccepting)
  bool acceptFailing = false;
  int64_t acceptFailingSinceMs = 0;
  // the next connection's upstream socket, made before its client is accepted (OnAcceptable)
  int nextUpstreamFd = -1;
  // stopping: new handshakes are refused, the listener closes at stopAtMs (BeginStopAccepting)
  bool stopPending = false;
  int64_t stopAtMs = 0;
  bool stoppedAccepting = false;
  // new connections go to the handoff address (counted in kHandedOff)
  bool handingOff = false;
};

// errno as its name (ECONNREFUSED), the way events and errors report it
std::string ErrnoName(int error);

// Makes the epoll set and the eventfd that wakes the loop. Returns false with *failed naming the
// system call and *error its errno; what was made before is closed by Shutdown.
bool Open(Engine* engine, const char** failed, int* error);

// Listens on `address` (with the socket options accepted sockets inherit), adds the listener to
// the epoll set and starts the loop thread; *port is the bound port. Returns false with *failed
// naming the step ("socket", "listen" for bind or listen, "epoll_ctl") and *error its errno.
bool StartListening(Engine* engine, const sockaddr_storage& address, socklen_t length, int backlog,
                    int keepAliveSeconds, int* port, const char** failed, int* error);

// Sets command bits for the loop thread and wakes it.
void Command(Engine* engine, uint32_t command);

// Makes `address` the upstream of the connections accepted from now on (the loop takes it at
// its next wake-up); open connections keep theirs.
void HandOff(Engine* engine, const sockaddr_storage& address, socklen_t length);

// Stops the loop (resetting open connections) and waits for its thread; idempotent.
void Shutdown(Engine* engine);

// Frees the pooled connections. Only once the loop has stopped and its epoll set is closed.
void FreeSpares(Engine* engine);

}  // namespace proxy_engine

#endif  // SIDECAR_NATIVE_EPOLL_LOOP_H_
