// The epoll loop of the sidecar's native data path: accept, connect, pump, close, the counters
// and the loop thread. What it does and the rules it keeps are in epoll-loop.h; nothing here
// knows Node-API (napi-binding.cc is the addon around it).
#include "epoll-loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace proxy_engine {

struct Side {
  Connection* connection;
  Side* other;
  int fd = -1;
  bool client;
  // Edge-triggered readiness as last reported by epoll and not used up yet: `readable` until a
  // read comes back short (or EAGAIN), `writable` until a send does not take everything.
  bool readable = false;
  bool writable = true;
  // the peer's FIN has been seen by epoll (EPOLLRDHUP): read on until end of stream, since a
  // short read no longer means there is nothing more to learn
  bool peerClosed = false;
  // end of stream read from this socket
  bool ended = false;
  // we sent FIN to this socket
  bool shut = false;
  // queued for another pass of the loop (it was still readable after its share of reads)
  bool queued = false;
  Side* prevQueued = nullptr;
  Side* nextQueued = nullptr;
  // bytes read from the other socket that this one's kernel buffer did not take yet
  char* pending = nullptr;
  size_t pendingOffset = 0;
  size_t pendingLength = 0;
  // The direction from this socket to the other (this one the source): reads in a row that
  // filled the read buffer, whether it moves through a pipe now, and how many passes in a row
  // moved only a small message since it does (see PumpSpliced).
  int fullReads = 0;
  bool spliced = false;
  int smallPasses = 0;
  // while the other socket's direction is spliced: the pipe its bytes pass through towards this
  // one, how many of them wait in it, and whether those are in kPendingBytes (only bytes left
  // after a splice into this socket are, as with `pending`: the counter tells the JavaScript
  // thread what is held up, not what is on its way)
  Pipe pipe;
  size_t piped = 0;
  bool pipedHeld = false;
};

struct Connection {
  Side client;
  Side upstream;
  bool connected = false;
  bool closing = false;
  int64_t startedMonoMs = 0;
  double bytesIn = 0;
  double bytesOut = 0;
  // every open connection, and separately those still connecting (oldest first)
  Connection* prev = nullptr;
  Connection* next = nullptr;
  Connection* connectingPrev = nullptr;
  Connection* connectingNext = nullptr;
  bool inConnecting = false;
  // the upstream could not be reached (connect error or timeout): counted and logged as such
  bool upstreamUnreachable = false;
  // Bumped every time the pooled object serves a new connection; epoll events carry it, so an
  // event for an earlier connection that lived here is recognised and ignored (see Tag).
  uint16_t generation = 0;
  Connection* nextDead = nullptr;
};

std::string ErrnoName(int error) {
  const char* name = strerrorname_np(error);
  return name ? name : "E" + std::to_string(error);
}

namespace {

constexpr size_t kIdleBuffersKept = 16;
constexpr size_t kIdlePipesKept = 16;
// Reads in a row that fill the read buffer before a direction moves through a pipe: one full
// read can be a single large message; two mean the sender keeps the socket full.
constexpr int kFullReadsToSplice = 2;
// A spliced direction copies again after kSmallPassesToCopy passes in a row that each moved
// less than kSmallPassBytes (small messages, not a slow bulk stream): its splices no longer save
// copies worth having, and every pass costs one splice more than a read would (only EAGAIN tells
// that the socket is empty, since a short splice may just be a full pipe).
constexpr size_t kSmallPassBytes = 4 * 1024;
constexpr int kSmallPassesToCopy = 8;
constexpr int kAcceptsPerWake = 64;
constexpr int kReadsPerWake = 16;
constexpr int kEventsPerWait = 256;
constexpr int64_t kAcceptPauseMs = 100;
// How long a stopping listener that refuses new handshakes stays open for those already under
// way (their last ACK is one round trip away) before its backlog is taken and it closes.
constexpr int64_t kStopSettleMs = 50;

int64_t NowMs(clockid_t clock) {
  timespec ts;
  clock_gettime(clock, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

// Tags for the two epoll entries that are not sockets of a connection.
char kListenerTag;
char kWakeTag;

// The loop thread's stores to the counters: 8-byte stores the JavaScript thread may read at any
// time. Release order keeps them in program order (on x86-64 they are plain moves).
void Store(Engine* engine, Counter counter, double value) {
  __atomic_store(&engine->counters[counter], &value, __ATOMIC_RELEASE);
}

double Load(Engine* engine, Counter counter) {
  double value;
  __atomic_load(&engine->counters[counter], &value, __ATOMIC_RELAXED);
  return value;
}

void Post(Engine* engine, Event* event) {
  engine->post(engine, event);
}

void PostSimple(Engine* engine, EventKind kind, std::string reason = std::string()) {
  Event* event = new Event();
  event->kind = kind;
  event->reason = std::move(reason);
  Post(engine, event);
}

char* TakeBuffer(Engine* engine) {
  char* buffer;
  if (!engine->idleBuffers.empty()) {
    buffer = engine->idleBuffers.back();
    engine->idleBuffers.pop_back();
  } else {
    buffer = static_cast<char*>(malloc(kReadBytes));
    if (!buffer) abort();
  }
  engine->buffersInUse++;
  Store(engine, kBuffersInUse, engine->buffersInUse);
  Store(engine, kBuffersIdle, static_cast<double>(engine->idleBuffers.size()));
  return buffer;
}

void GiveBuffer(Engine* engine, char* buffer) {
  engine->buffersInUse--;
  if (engine->idleBuffers.size() < kIdleBuffersKept) engine->idleBuffers.push_back(buffer);
  else free(buffer);
  Store(engine, kBuffersInUse, engine->buffersInUse);
  Store(engine, kBuffersIdle, static_cast<double>(engine->idleBuffers.size()));
}

void StorePipes(Engine* engine) {
  Store(engine, kPipesInUse, engine->pipesInUse);
  Store(engine, kPipesIdle, static_cast<double>(engine->idlePipes.size()));
}

// A pipe for a direction that turns bulk, from the pool or new; false when none can be made
// (at the descriptor limit, say): the direction then keeps copying.
bool TakePipe(Engine* engine, Pipe* pipe) {
  if (!engine->idlePipes.empty()) {
    *pipe = engine->idlePipes.back();
    engine->idlePipes.pop_back();
  } else {
    int ends[2];
    if (pipe2(ends, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    pipe->read = ends[0];
    pipe->write = ends[1];
  }
  engine->pipesInUse++;
  StorePipes(engine);
  return true;
}

// Back to the pool when `empty` (a pipe with bytes in it is of no use to another connection).
void GivePipe(Engine* engine, Pipe* pipe, bool empty) {
  if (empty && engine->idlePipes.size() < kIdlePipesKept) {
    engine->idlePipes.push_back(*pipe);
  } else {
    close(pipe->read);
    close(pipe->write);
  }
  *pipe = Pipe();
  engine->pipesInUse--;
  StorePipes(engine);
}

void AddPending(Engine* engine, double bytes) {
  engine->pendingBytes += bytes;
  Store(engine, kPendingBytes, engine->pendingBytes);
}

std::string PeerOf(int fd) {
  sockaddr_storage address;
  socklen_t length = sizeof(address);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return std::string();
  char host[INET6_ADDRSTRLEN] = {0};
  int port = 0;
  if (address.ss_family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(&address);
    inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
    port = ntohs(in->sin_port);
  } else if (address.ss_family == AF_INET6) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&address);
    inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
    port = ntohs(in6->sin6_port);
  } else {
    return std::string();
  }
  return std::string(host) + ":" + std::to_string(port);
}

void Unqueue(Engine* engine, Side* side);

void RemoveConnecting(Engine* engine, Connection* connection) {
  if (!connection->inConnecting) return;
  if (connection->connectingPrev) connection->connectingPrev->connectingNext = connection->connectingNext;
  else engine->connectingHead = connection->connectingNext;
  if (connection->connectingNext) connection->connectingNext->connectingPrev = connection->connectingPrev;
  else engine->connectingTail = connection->connectingPrev;
  connection->inConnecting = false;
}

// Closes both sockets (with an RST when `reset`) and counts the connection closed; the memory is
// freed after the current batch of epoll events, which may still name it.
void Close(Engine* engine, Connection* connection, bool reset, const std::string& reason) {
  if (connection->closing) return;
  connection->closing = true;
  RemoveConnecting(engine, connection);
  bool wantPeer = connection->upstreamUnreachable || engine->debug;
  std::string peer = wantPeer ? PeerOf(connection->client.fd) : std::string();
  for (Side* side : {&connection->client, &connection->upstream}) {
    Unqueue(engine, side);
    if (side->fd < 0) continue;
    if (reset) {
      linger hard = {1, 0};
      setsockopt(side->fd, SOL_SOCKET, SO_LINGER, &hard, sizeof(hard));
    }
    // Closing drops the socket from the epoll set only if no other process holds it (a fork
    // between its fork and exec does). Its events then still come, with this connection's
    // generation, which the loop ignores once the object is reused or while it is closing.
    close(side->fd);
    side->fd = -1;
    if (side->pending) {
      AddPending(engine, -static_cast<double>(side->pendingLength - side->pendingOffset));
      GiveBuffer(engine, side->pending);
      side->pending = nullptr;
    }
    if (side->pipe.read >= 0) {
      if (side->pipedHeld) AddPending(engine, -static_cast<double>(side->piped));
      GivePipe(engine, &side->pipe, side->piped == 0);
      side->piped = 0;
      side->pipedHeld = false;
    }
  }
  if (connection->prev) connection->prev->next = connection->next;
  else engine->all = connection->next;
  if (connection->next) connection->next->prev = connection->prev;
  connection->nextDead = engine->dead;
  engine->dead = connection;

  // open before closed (and before opened, below): x86-64 and arm64 with release stores keep
  // that order, so a reader that sees closed reach N also sees open without that connection
  double open = Load(engine, kOpen) - 1;
  Store(engine, kOpen, open);
  Store(engine, kClosed, Load(engine, kClosed) + 1);
  if (connection->upstreamUnreachable) {
    Store(engine, kUpstreamFailures, Load(engine, kUpstreamFailures) + 1);
  }
  if (connection->upstreamUnreachable || engine->debug) {
    Event* event = new Event();
    event->kind = connection->upstreamUnreachable ? kEventUpstreamFailure : kEventClosed;
    event->reason = reason;
    event->peer = std::move(peer);
    event->ms = static_cast<double>(NowMs(CLOCK_MONOTONIC) - connection->startedMonoMs);
    event->bytesIn = connection->bytesIn;
    event->bytesOut = connection->bytesOut;
    Post(engine, event);
  }
  // the store of open above, then the load of watchDrain; the JavaScript side stores watchDrain,
  // then loads open: with a full fence on both sides one of them sees the other's store
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (open == 0 && engine->watchDrain.load()) PostSimple(engine, kEventDrained);
}

void Fail(Engine* engine, Connection* connection, const std::string& reason) {
  Close(engine, connection, true, reason);
}

void FailErrno(Engine* engine, Connection* connection, const char* what, int error) {
  Fail(engine, connection, std::string(what) + " " + ErrnoName(error));
}

// The upstream cannot be reached: the client is reset and the failure counted as the upstream's.
void FailUpstream(Engine* engine, Connection* connection, const std::string& reason) {
  connection->upstreamUnreachable = true;
  Fail(engine, connection, reason);
}

// The upstream socket can take data once its connect completed; the client always can.
bool CanSend(const Side* to) {
  return to->client || to->connection->connected;
}

// Sides still readable after their share of reads wait here (first in, first out) for the next
// pass of the loop; with edge-triggered epoll nothing else would bring them back.
void Queue(Engine* engine, Side* side) {
  if (side->queued) return;
  side->queued = true;
  side->prevQueued = engine->queuedTail;
  side->nextQueued = nullptr;
  if (engine->queuedTail) engine->queuedTail->nextQueued = side;
  else engine->queuedHead = side;
  engine->queuedTail = side;
  engine->queuedCount++;
}

void Unqueue(Engine* engine, Side* side) {
  if (!side->queued) return;
  if (side->prevQueued) side->prevQueued->nextQueued = side->nextQueued;
  else engine->queuedHead = side->nextQueued;
  if (side->nextQueued) side->nextQueued->prevQueued = side->prevQueued;
  else engine->queuedTail = side->prevQueued;
  side->queued = false;
  side->prevQueued = side->nextQueued = nullptr;
  engine->queuedCount--;
}

// `from` has ended and everything read from it is sent: FIN to the other socket, or, when the
// opposite direction is already done too, a plain close of both (close sends the FIN itself,
// one system call fewer than shutdown).
void FinishDirection(Engine* engine, Side* from) {
  Side* to = from->other;
  Connection* connection = from->connection;
  if (to->shut) return;
  if (to->ended && from->shut) {
    Close(engine, connection, false, std::string());
    return;
  }
  if (shutdown(to->fd, SHUT_WR) != 0) {
    FailErrno(engine, connection, to->client ? "client shutdown" : "upstream shutdown", errno);
    return;
  }
  to->shut = true;
}

void Count(Engine* engine, Side* from, size_t n) {
  Connection* connection = from->connection;
  if (from->client) {
    connection->bytesIn += n;
    Store(engine, kBytesIn, Load(engine, kBytesIn) + n);
  } else {
    connection->bytesOut += n;
    Store(engine, kBytesOut, Load(engine, kBytesOut) + n);
  }
  Store(engine, kLastActivityMs, static_cast<double>(NowMs(CLOCK_REALTIME)));
}

// Keeps what `to` did not take (bytes [sent, n) of the shared read buffer) and so stops reading
// `from` until it is sent.
void KeepPending(Engine* engine, Side* to, size_t sent, size_t n) {
  size_t rest = n - sent;
  to->pending = TakeBuffer(engine);
  memcpy(to->pending, engine->readBuffer + sent, rest);
  to->pendingOffset = 0;
  to->pendingLength = rest;
  AddPending(engine, static_cast<double>(rest));
}

// A send or splice into `to` returned -1 with `error`: whether to try again at once (EINTR).
// Otherwise `to` is full (it waits for EPOLLOUT) or the connection has failed.
bool RetrySend(Engine* engine, Side* to, int error) {
  if (error == EINTR) return true;
  if (error == EAGAIN || error == EWOULDBLOCK) to->writable = false;
  else FailErrno(engine, to->connection, to->client ? "client write" : "upstream write", error);
  return false;
}

// A read or splice from `from` returned `n` <= 0 (with `error` when -1): whether to try again at
// once (EINTR). Otherwise `from` has ended (0), is empty for now (EAGAIN), or the connection has
// failed (it is closing then).
bool RetryRead(Engine* engine, Side* from, ssize_t n, int error) {
  if (n == 0) {
    from->ended = true;
    from->readable = false;
  } else if (error == EINTR) {
    return true;
  } else if (error == EAGAIN || error == EWOULDBLOCK) {
    from->readable = false;
  } else {
    FailErrno(engine, from->connection, from->client ? "client read" : "upstream read", error);
  }
  return false;
}

// Sends what is pending towards `to`; returns whether nothing is left (false also on failure).
bool FlushPending(Engine* engine, Side* to) {
  while (to->pendingLength > 0) {
    if (!to->writable || !CanSend(to)) return false;
    ssize_t sent = send(to->fd, to->pending + to->pendingOffset, to->pendingLength - to->pendingOffset,
                        MSG_NOSIGNAL);
    if (sent < 0) {
      if (RetrySend(engine, to, errno)) continue;
      return false;
    }
    AddPending(engine, -static_cast<double>(sent));
    to->pendingOffset += static_cast<size_t>(sent);
    if (to->pendingOffset < to->pendingLength) {
      to->writable = false;
      return false;
    }
    GiveBuffer(engine, to->pending);
    to->pending = nullptr;
    to->pendingOffset = to->pendingLength = 0;
  }
  return true;
}

// Sends what waits in the pipe towards `to`; returns whether it is empty (false also on failure).
// A splice that does not take everything means the socket is full, as with send: the kernel
// only stops short of the length when the socket would block.
bool FlushPipe(Engine* engine, Side* to) {
  while (to->piped > 0) {
    if (!to->writable) return false;
    ssize_t sent = splice(to->pipe.read, nullptr, to->fd, nullptr, to->piped, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (sent < 0) {
      if (RetrySend(engine, to, errno)) continue;
      return false;
    }
    to->piped -= static_cast<size_t>(sent);
    if (to->pipedHeld) AddPending(engine, -static_cast<double>(sent));
    if (to->piped == 0) to->pipedHeld = false;
    if (to->piped > 0) {
      to->writable = false;
      return false;
    }
  }
  return true;
}

// The direction from -> from->other copies again (its pipe is empty).
void StopSplicing(Engine* engine, Side* from) {
  Side* to = from->other;
  GivePipe(engine, &to->pipe, true);
  from->spliced = false;
  from->fullReads = 0;
  from->smallPasses = 0;
}

void Pump(Engine* engine, Side* from);

// The direction from -> from->other through its pipe. The pipe is emptied into the destination
// before every splice from the source, so that EAGAIN from the source means it has nothing more
// (and not that the pipe is full) and the pipe never holds more than one read.
void PumpSpliced(Engine* engine, Side* from, int reads) {
  Side* to = from->other;
  Connection* connection = from->connection;
  size_t moved = 0;
  for (;;) {
    if (!FlushPipe(engine, to)) {
      if (!connection->closing && !to->pipedHeld) {
        to->pipedHeld = true;
        AddPending(engine, static_cast<double>(to->piped));
      }
      return;
    }
    if (!from->readable || from->ended) break;
    if (reads == kReadsPerWake) {
      Queue(engine, from);
      return;
    }
    reads++;
    ssize_t n = splice(from->fd, nullptr, to->pipe.write, nullptr, kReadBytes, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
    if (n > 0) {
      Count(engine, from, static_cast<size_t>(n));
      Store(engine, kSplicedBytes, Load(engine, kSplicedBytes) + n);
      engine->spliceWorked = true;
      to->piped = static_cast<size_t>(n);
      moved += static_cast<size_t>(n);
    } else if (n < 0 && (errno == EINVAL || errno == ENOSYS || errno == EOPNOTSUPP) && !engine->spliceWorked) {
      // sockets here cannot be spliced (a sandboxed kernel, say): nothing moved, copy instead
      engine->spliceUnsupported = true;
      StopSplicing(engine, from);
      Pump(engine, from);
      return;
    } else if (RetryRead(engine, from, n, errno)) {
      continue;
    } else if (connection->closing) {
      return;
    }
  }
  if (from->ended) {
    if (!CanSend(to)) return;
    StopSplicing(engine, from);
    FinishDirection(engine, from);
    return;
  }
  if (moved >= kSmallPassBytes) from->smallPasses = 0;
  else if (++from->smallPasses >= kSmallPassesToCopy) StopSplicing(engine, from);
}

// The copying direction has filled the read buffer kFullReadsToSplice times in a row and
// everything read is sent: from now on it moves through a pipe, if one can be had.
bool StartSplicing(Engine* engine, Side* from) {
  if (engine->spliceUnsupported || !TakePipe(engine, &from->other->pipe)) {
    from->fullReads = 0;
    return false;
  }
  from->spliced = true;
  from->smallPasses = 0;
  return true;
}

// Moves what it can in the direction from -> from->other: first what is pending, then reads
// while `from` is readable and the destination takes everything, then the end of stream.
void Pump(Engine* engine, Side* from) {
  if (from->spliced) {
    PumpSpliced(engine, from, 0);
    return;
  }
  Side* to = from->other;
  Connection* connection = from->connection;
  if (!FlushPending(engine, to)) return;
  for (int reads = 0; from->readable && !from->ended; reads++) {
    if (reads == kReadsPerWake) {
      // its share of this pass is used up; the rest waits for the next pass of the loop (no
      // new edge would come for data that is already there)
      Queue(engine, from);
      return;
    }
    ssize_t n = read(from->fd, engine->readBuffer, kReadBytes);
    if (n > 0) {
      Count(engine, from, static_cast<size_t>(n));
      bool full = static_cast<size_t>(n) == kReadBytes;
      from->fullReads = full ? from->fullReads + 1 : 0;
      // a short read emptied the socket, unless its FIN is known to be behind the data
      if (!full && !from->peerClosed) from->readable = false;
      if (!to->writable || !CanSend(to)) {
        // the upstream is still connecting (the client's first bytes), or `to` is full
        KeepPending(engine, to, 0, static_cast<size_t>(n));
        return;
      }
      ssize_t sent = send(to->fd, engine->readBuffer, static_cast<size_t>(n), MSG_NOSIGNAL);
      if (sent < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
          FailErrno(engine, connection, to->client ? "client write" : "upstream write", errno);
          return;
        }
        sent = 0;
      }
      if (sent < n) {
        to->writable = false;
        KeepPending(engine, to, static_cast<size_t>(sent), static_cast<size_t>(n));
        return;
      }
      if (from->fullReads >= kFullReadsToSplice && from->readable && StartSplicing(engine, from)) {
        PumpSpliced(engine, from, reads + 1);
        return;
      }
    } else if (RetryRead(engine, from, n, errno)) {
      continue;
    } else if (connection->closing) {
      return;
    }
  }
  // a FIN towards the upstream waits for its connect (the client may end before that)
  if (from->ended && CanSend(to)) FinishDirection(engine, from);
}

void OnSocketEvent(Engine* engine, Side* side, uint32_t events) {
  Connection* connection = side->connection;
  if (connection->closing) return;
  if (!side->client && !connection->connected) {
    // the connect's outcome: writable means connected, an error or hang-up means it failed
    if (events & (EPOLLERR | EPOLLHUP)) {
      int error = 0;
      socklen_t length = sizeof(error);
      getsockopt(side->fd, SOL_SOCKET, SO_ERROR, &error, &length);
      FailUpstream(engine, connection, "upstream connect " + ErrnoName(error ? error : ECONNREFUSED));
      return;
    }
    if (!(events & EPOLLOUT)) return;
    RemoveConnecting(engine, connection);
    connection->connected = true;
  }
  if (events & EPOLLRDHUP) side->peerClosed = true;
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) side->readable = true;
  if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) side->writable = true;
  if (events & EPOLLERR) {
    // A reset (TCP raises EPOLLERR only for fatal errors): reset the other side now. Waiting to
    // read what arrived before it could miss it for good when that read cannot happen yet (its
    // destination is full or still connecting: edge-triggered, no second report would come).
    int error = 0;
    socklen_t length = sizeof(error);
    getsockopt(side->fd, SOL_SOCKET, SO_ERROR, &error, &length);
    FailErrno(engine, connection, side->client ? "client" : "upstream", error ? error : ECONNRESET);
    return;
  }
  // this socket as the source (and, when it became writable, as the destination)
  Pump(engine, side);
  if (!connection->closing && (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))) Pump(engine, side->other);
}

// A socket's epoll data: its Side's address in the low 48 bits (user-space addresses on x86-64
// and arm64 fit) and its connection's generation in the high 16.
constexpr uint64_t kAddressBits = 48;
constexpr uint64_t kAddressMask = (uint64_t{1} << kAddressBits) - 1;

uint64_t Tag(Side* side) {
  return reinterpret_cast<uintptr_t>(side) | (uint64_t{side->connection->generation} << kAddressBits);
}

bool Register(Engine* engine, Side* side) {
  epoll_event event{};
  event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  event.data.u64 = Tag(side);
  if (epoll_ctl(engine->epoll, EPOLL_CTL_ADD, side->fd, &event) == 0) return true;
  FailErrno(engine, side->connection, "epoll_ctl", errno);
  return false;
}

Connection* NewConnection(Engine* engine) {
  Connection* connection = engine->spare;
  if (!connection) {
    connection = new Connection();
    if (reinterpret_cast<uintptr_t>(&connection->upstream) > kAddressMask) abort();
    return connection;
  }
  engine->spare = connection->nextDead;
  uint16_t generation = static_cast<uint16_t>(connection->generation + 1);
  *connection = Connection();
  connection->generation = generation;
  return connection;
}

void SetListenerInterest(Engine* engine, bool on);

// Out of descriptors (EMFILE, ENFILE) or socket memory: stops accepting for a moment (the backlog
// holds new clients) instead of spinning on a listener that stays readable; open connections keep
// flowing. An episode is reported when it starts and when the backlog is empty again, so a
// process that hovers at its limit does not log every connection that gets through.
void PauseAccepting(Engine* engine, int error) {
  int64_t now = NowMs(CLOCK_MONOTONIC);
  if (!engine->acceptFailing) {
    engine->acceptFailing = true;
    engine->acceptFailingSinceMs = now;
    PostSimple(engine, kEventListenerError, ErrnoName(error));
  }
  engine->acceptPaused = true;
  engine->acceptPausedUntil = now + kAcceptPauseMs;
  SetListenerInterest(engine, false);
}

void AcceptingAgain(Engine* engine) {
  engine->acceptFailing = false;
  Event* event = new Event();
  event->kind = kEventAcceptingAgain;
  event->ms = static_cast<double>(NowMs(CLOCK_MONOTONIC) - engine->acceptFailingSinceMs);
  Post(engine, event);
}

void StartConnection(Engine* engine, int clientFd, int upstreamFd) {
  Connection* connection = NewConnection(engine);
  connection->client.connection = connection->upstream.connection = connection;
  connection->client.other = &connection->upstream;
  connection->upstream.other = &connection->client;
  connection->client.client = true;
  connection->upstream.client = false;
  connection->client.fd = clientFd;
  connection->startedMonoMs = NowMs(CLOCK_MONOTONIC);
  connection->next = engine->all;
  if (engine->all) engine->all->prev = connection;
  engine->all = connection;
  Store(engine, kOpen, Load(engine, kOpen) + 1);
  Store(engine, kOpened, Load(engine, kOpened) + 1);
  if (engine->handingOff) Store(engine, kHandedOff, Load(engine, kHandedOff) + 1);

  int fd = upstreamFd;
  connection->upstream.fd = fd;
  int on = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  if (connect(fd, reinterpret_cast<sockaddr*>(&engine->upstream), engine->upstreamLength) == 0) {
    connection->connected = true;
  } else if (errno != EINPROGRESS) {
    FailUpstream(engine, connection, "upstream connect " + ErrnoName(errno));
    return;
  } else {
    connection->inConnecting = true;
    connection->connectingPrev = engine->connectingTail;
    if (engine->connectingTail) engine->connectingTail->connectingNext = connection;
    else engine->connectingHead = connection;
    engine->connectingTail = connection;
  }
  // Both sockets are registered once, edge-triggered, for everything: no epoll_ctl per state
  // change. The client is read from now on: its first bytes usually come with the connection
  // and wait in a pending buffer until the upstream is connected (nothing more is read before).
  if (Register(engine, &connection->upstream)) Register(engine, &connection->client);
}

void SetListenerInterest(Engine* engine, bool on) {
  epoll_event event{};
  event.events = on ? static_cast<uint32_t>(EPOLLIN) : 0u;
  event.data.ptr = &kListenerTag;
  epoll_ctl(engine->epoll, EPOLL_CTL_MOD, engine->listener.load(), &event);
}

bool Readable(int fd) {
  pollfd entry{fd, POLLIN, 0};
  return poll(&entry, 1, 0) > 0 && (entry.revents & POLLIN);
}

// Out of descriptors (or the like) for the next client. Linux reports EMFILE from accept before it
// looks at the backlog, so the error alone does not say anybody is waiting: only if somebody is
// is it worth a pause and a log line. If nobody is, every client that waited has been taken and
// the episode is over; the listener is level-triggered and brings the loop back when one comes.
void CannotAccept(Engine* engine, int listener, int error) {
  if (Readable(listener)) PauseAccepting(engine, error);
  else if (engine->acceptFailing) AcceptingAgain(engine);
}

enum AcceptResult { kAccepted, kBacklogEmpty, kCannotAccept };

// Takes the next client off the backlog. The upstream socket is made before the client is
// accepted, so a client is only taken off the backlog when both of its descriptors exist: at the
// descriptor limit new clients wait in the backlog (and are served once descriptors free up)
// instead of being accepted and reset.
AcceptResult AcceptNext(Engine* engine, int listener) {
  if (engine->nextUpstreamFd < 0) {
    engine->nextUpstreamFd = socket(engine->upstream.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (engine->nextUpstreamFd < 0) {
      CannotAccept(engine, listener, errno);
      return kCannotAccept;
    }
  }
  for (;;) {
    // odd from before the client leaves the backlog until it is in the counters (kAcceptSeq)
    Store(engine, kAcceptSeq, Load(engine, kAcceptSeq) + 1);
    // seen before the client leaves the backlog (a release store alone may pass the syscall)
    std::atomic_thread_fence(std::memory_order_seq_cst);
    // accepted sockets inherit TCP_NODELAY and keepalive from the listener
    int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      int upstreamFd = engine->nextUpstreamFd;
      engine->nextUpstreamFd = -1;
      StartConnection(engine, fd, upstreamFd);
      Store(engine, kAcceptSeq, Load(engine, kAcceptSeq) + 1);
      return kAccepted;
    }
    Store(engine, kAcceptSeq, Load(engine, kAcceptSeq) + 1);
    if (errno == EINTR || errno == ECONNABORTED) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      // the backlog is empty: every client that waited has been taken
      if (engine->acceptFailing) AcceptingAgain(engine);
      return kBacklogEmpty;
    }
    CannotAccept(engine, listener, errno);
    return kCannotAccept;
  }
}

void OnAcceptable(Engine* engine) {
  int listener = engine->listener.load();
  for (int i = 0; i < kAcceptsPerWake; i++) {
    if (AcceptNext(engine, listener) != kAccepted) return;
  }
}

// Closes the listener, with `takeQueued` after taking every client queued in its backlog (all of
// them, not a share per wake-up): closing a listening socket resets the clients still queued in
// it. Between the last accept, which finds the backlog empty, and the close there is no other
// work. At the descriptor limit the queued clients cannot be taken, and are reset.
void StopAccepting(Engine* engine, bool takeQueued) {
  if (engine->stoppedAccepting) return;
  engine->stoppedAccepting = true;
  engine->stopPending = false;
  int listener = engine->listener.load();
  if (takeQueued && listener >= 0) {
    while (AcceptNext(engine, listener) == kAccepted) {
    }
  }
  listener = engine->listener.exchange(-1);
  if (listener >= 0) close(listener);
  if (engine->nextUpstreamFd >= 0) close(engine->nextUpstreamFd);
  engine->nextUpstreamFd = -1;
  engine->acceptPaused = false;
  PostSimple(engine, kEventStoppedAccepting);
}

// A classic BPF socket filter that drops a bare SYN (SYN without ACK) and lets every other segment
// through. TCP runs a listener's filter on each segment for it with the data at the TCP header,
// whose flags are byte 13: new handshakes stop at the filter (the client sends its SYN again a
// second later and then finds the port closed: refused), while those under way, whose final ACK
// is still coming, complete into the backlog.
bool RefuseNewHandshakes(int listener) {
  static sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),
      BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),  // SYN | ACK
      BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),
      BPF_STMT(BPF_RET | BPF_K, 0),
      BPF_STMT(BPF_RET | BPF_K, 0xffffffff),
  };
  sock_fprog program = {static_cast<unsigned short>(sizeof(code) / sizeof(code[0])), code};
  return setsockopt(listener, SOL_SOCKET, SO_ATTACH_FILTER, &program, sizeof(program)) == 0;
}

// Stops accepting without resetting anybody who connected: the listener first refuses new
// handshakes, stays open kStopSettleMs for those under way (a handshake the listener has answered
// but whose last ACK had not come would be reset by the close), accepting as clients come, and
// then StopAccepting takes its backlog and closes it (Loop, once stopAtMs is reached). Without
// the filter (it cannot be attached) it does that at once.
void BeginStopAccepting(Engine* engine) {
  if (engine->stoppedAccepting || engine->stopPending) return;
  int listener = engine->listener.load();
  if (listener < 0 || !RefuseNewHandshakes(listener)) {
    StopAccepting(engine, true);
    return;
  }
  engine->stopPending = true;
  engine->stopAtMs = NowMs(CLOCK_MONOTONIC) + kStopSettleMs;
}

// The handoff address becomes the upstream of the connections accepted from now on.
void TakeHandOff(Engine* engine) {
  {
    std::lock_guard<std::mutex> lock(engine->handoffMutex);
    if (engine->handoffLength == 0) return;
    engine->upstream = engine->handoff;
    engine->upstreamLength = engine->handoffLength;
  }
  engine->handingOff = true;
  // made for the old upstream, whose address family may differ
  if (engine->nextUpstreamFd >= 0) close(engine->nextUpstreamFd);
  engine->nextUpstreamFd = -1;
}

void DestroyAll(Engine* engine, const std::string& reason) {
  while (engine->all) Fail(engine, engine->all, reason);
}

// Closed connections become spares once the batch of events that may still name them is done.
void FreeDead(Engine* engine) {
  while (engine->dead) {
    Connection* next = engine->dead->nextDead;
    engine->dead->nextDead = engine->spare;
    engine->spare = engine->dead;
    engine->dead = next;
  }
}

void Loop(Engine* engine) {
  epoll_event events[kEventsPerWait];
  for (;;) {
    int64_t now = NowMs(CLOCK_MONOTONIC);
    while (engine->connectingHead && now - engine->connectingHead->startedMonoMs >= engine->connectTimeoutMs) {
      FailUpstream(engine, engine->connectingHead, "upstream connect timeout");
    }
    if (engine->acceptPaused && now >= engine->acceptPausedUntil && engine->listener.load() >= 0) {
      engine->acceptPaused = false;
      SetListenerInterest(engine, true);
    }
    if (engine->stopPending && now >= engine->stopAtMs) StopAccepting(engine, true);
    FreeDead(engine);
    int64_t timeout = -1;
    if (engine->connectingHead) {
      timeout = engine->connectingHead->startedMonoMs + engine->connectTimeoutMs - now;
    }
    if (engine->stopPending) {
      int64_t stop = engine->stopAtMs - now;
      if (stop < 1) stop = 1;
      if (timeout < 0 || stop < timeout) timeout = stop;
    }
    if (engine->acceptPaused) {
      int64_t resume = engine->acceptPausedUntil - now;
      if (resume < 1) resume = 1;
      if (timeout < 0 || resume < timeout) timeout = resume;
    }
    if (timeout == 0) timeout = 1;
    // sides with data left from the last pass: look for new events without waiting
    if (engine->queuedHead) timeout = 0;
    int count = epoll_wait(engine->epoll, events, kEventsPerWait, static_cast<int>(timeout));
    if (count < 0) {
      if (errno == EINTR) continue;
      abort();
    }
    for (int i = 0; i < count; i++) {
      void* tag = events[i].data.ptr;
      if (tag == &kWakeTag) {
        uint64_t ignored;
        (void)!read(engine->wake, &ignored, sizeof(ignored));
        uint32_t commands = engine->commands.exchange(0);
        if (commands & kExit) {
          StopAccepting(engine, false);
          DestroyAll(engine, "reset by the proxy (closed)");
          FreeDead(engine);
          return;
        }
        // before stopping: the clients taken from the backlog then go to the handoff address too
        if (commands & kHandOff) TakeHandOff(engine);
        if (commands & kStopAccepting) BeginStopAccepting(engine);
        if (commands & kDestroyAll) DestroyAll(engine, "reset by the proxy (grace period over)");
      } else if (tag == &kListenerTag) {
        if (engine->listener.load() >= 0 && !engine->acceptPaused) OnAcceptable(engine);
      } else {
        Side* side = reinterpret_cast<Side*>(events[i].data.u64 & kAddressMask);
        // an event for an earlier connection that lived in this (pooled) object: ignore it
        if (side->connection->generation != events[i].data.u64 >> kAddressBits) continue;
        OnSocketEvent(engine, side, events[i].events);
      }
    }
    // one more share for each side queued before this pass; those it queues again wait behind
    for (size_t n = engine->queuedCount; n > 0 && engine->queuedHead; n--) {
      Side* side = engine->queuedHead;
      Unqueue(engine, side);
      Pump(engine, side);
    }
  }
}

void ThreadMain(Engine* engine) {
  Loop(engine);
  while (!engine->idleBuffers.empty()) {
    free(engine->idleBuffers.back());
    engine->idleBuffers.pop_back();
  }
  for (Pipe& pipe : engine->idlePipes) {
    close(pipe.read);
    close(pipe.write);
  }
  engine->idlePipes.clear();
  StorePipes(engine);
}

}  // namespace

// ---- called from the JavaScript thread (epoll-loop.h) ---------------------------------------

bool Open(Engine* engine, const char** failed, int* error) {
  if ((engine->epoll = epoll_create1(EPOLL_CLOEXEC)) < 0) {
    *failed = "epoll_create1";
  } else if ((engine->wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
    *failed = "eventfd";
  } else {
    epoll_event wakeEvent{};
    wakeEvent.events = EPOLLIN;
    wakeEvent.data.ptr = &kWakeTag;
    if (epoll_ctl(engine->epoll, EPOLL_CTL_ADD, engine->wake, &wakeEvent) == 0) return true;
    *failed = "epoll_ctl";
  }
  *error = errno;
  return false;
}

bool StartListening(Engine* engine, const sockaddr_storage& address, socklen_t length, int backlog,
                    int keepAliveSeconds, int* port, const char** failed, int* error) {
  int fd = socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *failed = "socket";
    *error = errno;
    return false;
  }
  int on = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
  // inherited by every accepted socket (Linux copies the listener's options at accept)
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
  setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
  int idle = keepAliveSeconds > 0 ? keepAliveSeconds : 15, interval = 1, probes = 10;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof(interval));
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof(probes));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&address), length) != 0 || listen(fd, backlog) != 0) {
    *failed = "listen";
    *error = errno;
    close(fd);
    return false;
  }
  sockaddr_storage bound;
  socklen_t boundLength = sizeof(bound);
  getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &boundLength);
  *port = ntohs(bound.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port
                                             : reinterpret_cast<sockaddr_in*>(&bound)->sin_port);
  epoll_event event{};
  event.events = EPOLLIN;
  event.data.ptr = &kListenerTag;
  if (epoll_ctl(engine->epoll, EPOLL_CTL_ADD, fd, &event) != 0) {
    *failed = "epoll_ctl";
    *error = errno;
    close(fd);
    return false;
  }
  engine->listener.store(fd);

  // the loop thread must not take the process's signals (SIGTERM is the JavaScript side's)
  sigset_t all, previous;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &previous);
  // a lambda, whose type is local to this file: std::thread(ThreadMain, engine) would make the
  // addon export the thread's state type for Engine*, which is no longer file-local
  engine->thread = std::thread([engine] { ThreadMain(engine); });
  pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  engine->running = true;
  return true;
}

void Command(Engine* engine, uint32_t command) {
  engine->commands.fetch_or(command);
  uint64_t one = 1;
  (void)!write(engine->wake, &one, sizeof(one));
}

void HandOff(Engine* engine, const sockaddr_storage& address, socklen_t length) {
  {
    std::lock_guard<std::mutex> lock(engine->handoffMutex);
    engine->handoff = address;
    engine->handoffLength = length;
  }
  Command(engine, kHandOff);
}

// Stops the loop (resetting open connections) and waits for its thread; idempotent.
void Shutdown(Engine* engine) {
  if (engine->running && !engine->joined) {
    Command(engine, kExit);
    engine->thread.join();
    engine->joined = true;
  }
  int listener = engine->listener.exchange(-1);
  if (listener >= 0) close(listener);
  if (engine->wake >= 0) close(engine->wake);
  if (engine->epoll >= 0) close(engine->epoll);
  engine->wake = engine->epoll = -1;
}

// Only once the loop has stopped and its epoll set is closed.
void FreeSpares(Engine* engine) {
  FreeDead(engine);
  while (engine->spare) {
    Connection* next = engine->spare->nextDead;
    delete engine->spare;
    engine->spare = next;
  }
}

}  // namespace proxy_engine
