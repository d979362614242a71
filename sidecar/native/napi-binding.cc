// The Node-API binding of the sidecar's native data path (the loop itself is epoll-loop.h and
// epoll-loop.cc): it unpacks the JavaScript arguments, makes an engine per create() and owns the
// thread-safe function that carries the loop's events to JavaScript, sends the loop its
// commands, and frees the engine when its external is collected or the environment goes away.
// The functions here run on the JavaScript thread, except PostJs (the loop thread's Engine::post).
#define NAPI_VERSION 8
#include <node_api.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "epoll-loop.h"

namespace proxy_engine {
namespace {

// An engine as the binding makes it: the loop's state, and the JavaScript objects it reports to
// and writes into.
struct JsEngine : Engine {
  napi_threadsafe_function events = nullptr;
  napi_ref countersRef = nullptr;
};

#define CHECK(call)                                                      \
  do {                                                                   \
    if ((call) != napi_ok) {                                             \
      const napi_extended_error_info* info = nullptr;                    \
      napi_get_last_error_info(env, &info);                              \
      bool pending = false;                                              \
      napi_is_exception_pending(env, &pending);                          \
      if (!pending) {                                                    \
        napi_throw_error(env, nullptr,                                   \
                         info && info->error_message ? info->error_message \
                                                     : "native proxy: N-API call failed"); \
      }                                                                  \
      return nullptr;                                                    \
    }                                                                    \
  } while (0)

napi_value ThrowErrno(napi_env env, const char* syscall, int error, const std::string& where) {
  std::string code = ErrnoName(error);
  std::string message = std::string(syscall) + " " + code + " " + where;
  napi_value codeValue, messageValue, errorValue, syscallValue;
  napi_create_string_utf8(env, code.c_str(), NAPI_AUTO_LENGTH, &codeValue);
  napi_create_string_utf8(env, message.c_str(), NAPI_AUTO_LENGTH, &messageValue);
  napi_create_error(env, codeValue, messageValue, &errorValue);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &syscallValue);
  napi_set_named_property(env, errorValue, "syscall", syscallValue);
  napi_throw(env, errorValue);
  return nullptr;
}

const char* EventName(EventKind kind) {
  switch (kind) {
    case kEventUpstreamFailure: return "upstream-failure";
    case kEventClosed: return "closed";
    case kEventListenerError: return "listener-error";
    case kEventStoppedAccepting: return "stopped-accepting";
    case kEventDrained: return "drained";
    case kEventAcceptingAgain: return "accepting-again";
  }
  return "unknown";
}

void CallJs(napi_env env, napi_value callback, void* /*context*/, void* data) {
  Event* event = static_cast<Event*>(data);
  if (env != nullptr && callback != nullptr) {
    napi_value object, value, undefined;
    napi_create_object(env, &object);
    napi_create_string_utf8(env, EventName(event->kind), NAPI_AUTO_LENGTH, &value);
    napi_set_named_property(env, object, "kind", value);
    if (!event->reason.empty()) {
      napi_create_string_utf8(env, event->reason.c_str(), NAPI_AUTO_LENGTH, &value);
      napi_set_named_property(env, object, "reason", value);
    }
    if (!event->peer.empty()) {
      napi_create_string_utf8(env, event->peer.c_str(), NAPI_AUTO_LENGTH, &value);
      napi_set_named_property(env, object, "peer", value);
    }
    if (event->kind == kEventClosed || event->kind == kEventUpstreamFailure ||
        event->kind == kEventAcceptingAgain) {
      napi_create_double(env, event->ms, &value);
      napi_set_named_property(env, object, "ms", value);
    }
    if (event->kind == kEventClosed || event->kind == kEventUpstreamFailure) {
      napi_create_double(env, event->bytesIn, &value);
      napi_set_named_property(env, object, "bytesIn", value);
      napi_create_double(env, event->bytesOut, &value);
      napi_set_named_property(env, object, "bytesOut", value);
    }
    napi_get_undefined(env, &undefined);
    // an exception thrown by the callback surfaces as an uncaught exception, like any callback's
    napi_call_function(env, undefined, callback, 1, &object, nullptr);
  }
  delete event;
}

// Engine::post, on the loop thread: queues the event for CallJs without ever blocking the loop.
void PostJs(Engine* engine, Event* event) {
  napi_threadsafe_function events = static_cast<JsEngine*>(engine)->events;
  if (napi_call_threadsafe_function(events, event, napi_tsfn_nonblocking) != napi_ok) delete event;
}

void DeleteEngine(JsEngine* engine) {
  Shutdown(engine);
  FreeSpares(engine);
  delete engine;
}

// Gives up the thread-safe function once the loop thread is gone (nothing posts any more).
// Never called while Node tears the function down itself: close() and the cleanup hook clear
// `events` first, and Node finalizes the external inside that teardown (releasing then
// deadlocks on the function's own mutex).
void ReleaseEvents(JsEngine* engine) {
  if (!engine->events) return;
  // release, not abort: events still queued (say "stopped-accepting") are delivered
  napi_release_threadsafe_function(engine->events, napi_tsfn_release);
  engine->events = nullptr;
}

void CleanupHook(void* data) {
  // the environment is going away (process exit, a worker ending): stop the thread first; Node
  // closes the thread-safe function itself afterwards
  JsEngine* engine = static_cast<JsEngine*>(data);
  Shutdown(engine);
  engine->events = nullptr;
}

void FinalizeEngine(napi_env env, void* data, void* /*hint*/) {
  JsEngine* engine = static_cast<JsEngine*>(data);
  napi_remove_env_cleanup_hook(env, CleanupHook, engine);
  // the thread first: it may still post events
  Shutdown(engine);
  ReleaseEvents(engine);
  if (engine->countersRef) napi_delete_reference(env, engine->countersRef);
  DeleteEngine(engine);
}

JsEngine* GetEngine(napi_env env, napi_value value) {
  void* data = nullptr;
  if (napi_get_value_external(env, value, &data) != napi_ok || data == nullptr) {
    napi_throw_type_error(env, nullptr, "native proxy: not an engine");
    return nullptr;
  }
  return static_cast<JsEngine*>(data);
}

// Unpacks a call whose first argument is the engine: fills argv (N at most) and returns the
// engine, or nullptr with a JavaScript exception pending.
template <size_t N>
JsEngine* EngineCall(napi_env env, napi_callback_info info, napi_value (&argv)[N]) {
  size_t argc = N;
  if (napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr) != napi_ok || argc < 1) {
    napi_throw_type_error(env, nullptr, "native proxy: the engine is missing");
    return nullptr;
  }
  return GetEngine(env, argv[0]);
}

bool ParseAddress(const std::string& host, int port, sockaddr_storage* out, socklen_t* length) {
  memset(out, 0, sizeof(*out));
  auto* in = reinterpret_cast<sockaddr_in*>(out);
  if (inet_pton(AF_INET, host.c_str(), &in->sin_addr) == 1) {
    in->sin_family = AF_INET;
    in->sin_port = htons(static_cast<uint16_t>(port));
    *length = sizeof(sockaddr_in);
    return true;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
  if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(static_cast<uint16_t>(port));
    *length = sizeof(sockaddr_in6);
    return true;
  }
  return false;
}

bool GetString(napi_env env, napi_value value, std::string* out) {
  size_t length = 0;
  if (napi_get_value_string_utf8(env, value, nullptr, 0, &length) != napi_ok) return false;
  out->resize(length);
  return napi_get_value_string_utf8(env, value, out->data(), length + 1, &length) == napi_ok;
}

// create(upstreamHost, upstreamPort, connectTimeoutMs, debug, counters: Float64Array, onEvent)
napi_value Create(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, nullptr, nullptr));
  if (argc != 6) {
    napi_throw_type_error(env, nullptr, "native proxy: create() takes 6 arguments");
    return nullptr;
  }
  std::string host;
  int32_t port = 0;
  double timeout = 0;
  bool debug = false;
  if (!GetString(env, argv[0], &host)) {
    napi_throw_type_error(env, nullptr, "native proxy: upstream host must be a string");
    return nullptr;
  }
  CHECK(napi_get_value_int32(env, argv[1], &port));
  CHECK(napi_get_value_double(env, argv[2], &timeout));
  CHECK(napi_get_value_bool(env, argv[3], &debug));
  bool isTyped = false;
  CHECK(napi_is_typedarray(env, argv[4], &isTyped));
  napi_typedarray_type type;
  size_t length = 0;
  void* data = nullptr;
  if (isTyped) CHECK(napi_get_typedarray_info(env, argv[4], &type, &length, &data, nullptr, nullptr));
  if (!isTyped || type != napi_float64_array || length < kCounterCount) {
    std::string message =
        "native proxy: counters must be a Float64Array of " + std::to_string(static_cast<int>(kCounterCount));
    napi_throw_type_error(env, nullptr, message.c_str());
    return nullptr;
  }

  napi_valuetype callbackType;
  CHECK(napi_typeof(env, argv[5], &callbackType));
  if (callbackType != napi_function) {
    napi_throw_type_error(env, nullptr, "native proxy: onEvent must be a function");
    return nullptr;
  }
  sockaddr_storage upstream;
  socklen_t upstreamLength = 0;
  if (!ParseAddress(host, port, &upstream, &upstreamLength) || port <= 0 || port > 65535) {
    napi_throw_type_error(env, nullptr, "native proxy: the upstream must be an IP address and a port");
    return nullptr;
  }
  if (!(timeout >= 1)) timeout = 1;
  if (timeout > 86400000) timeout = 86400000;  // a day: epoll_wait's timeout is an int of ms

  // From here on every failure undoes what was made before it.
  JsEngine* engine = new JsEngine();
  engine->upstream = upstream;
  engine->upstreamLength = upstreamLength;
  engine->connectTimeoutMs = static_cast<int64_t>(timeout);
  engine->debug = debug;
  engine->counters = static_cast<double*>(data);
  engine->post = PostJs;
  const char* failed = nullptr;
  int error = 0;
  napi_value name, external = nullptr;
  // the Float64Array's backing store does not move; the reference keeps it alive
  if (napi_create_reference(env, argv[4], 1, &engine->countersRef) != napi_ok) {
    failed = "napi_create_reference";
  } else if (Open(engine, &failed, &error)) {
    if (napi_create_string_utf8(env, "buildkit-fleet native proxy", NAPI_AUTO_LENGTH, &name) != napi_ok ||
        napi_create_threadsafe_function(env, argv[5], nullptr, name, 0, 1, nullptr, nullptr, nullptr, CallJs,
                                        &engine->events) != napi_ok) {
      failed = "napi_create_threadsafe_function";
    } else if (napi_unref_threadsafe_function(env, engine->events) != napi_ok ||
               napi_create_external(env, engine, FinalizeEngine, nullptr, &external) != napi_ok) {
      // the loop does not keep the process alive by itself: the JS side refs it while listening
      failed = "napi_create_external";
    }
  }
  if (failed) {
    ReleaseEvents(engine);
    if (engine->countersRef) napi_delete_reference(env, engine->countersRef);
    DeleteEngine(engine);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (pending) return nullptr;
    if (error) return ThrowErrno(env, failed, error, "(native proxy)");
    napi_throw_error(env, nullptr, (std::string("native proxy: ") + failed + " failed").c_str());
    return nullptr;
  }
  // owned by the external from here (FinalizeEngine)
  if (napi_add_env_cleanup_hook(env, CleanupHook, engine) != napi_ok) {
    napi_throw_error(env, nullptr, "native proxy: napi_add_env_cleanup_hook failed");
    return nullptr;
  }
  return external;
}

// listen(engine, host, port, backlog, keepAliveSeconds) -> bound port
napi_value Listen(napi_env env, napi_callback_info info) {
  napi_value argv[5];
  JsEngine* engine = EngineCall(env, info, argv);
  if (!engine) return nullptr;
  std::string host;
  int32_t port = 0, backlog = 0, keepAlive = 0;
  GetString(env, argv[1], &host);
  CHECK(napi_get_value_int32(env, argv[2], &port));
  CHECK(napi_get_value_int32(env, argv[3], &backlog));
  CHECK(napi_get_value_int32(env, argv[4], &keepAlive));
  std::string where = host + ":" + std::to_string(port);
  if (engine->running || engine->stoppedAccepting) {
    napi_throw_error(env, nullptr, "proxy is already listening");
    return nullptr;
  }
  sockaddr_storage address;
  socklen_t length;
  if (!ParseAddress(host, port, &address, &length)) {
    napi_throw_type_error(env, nullptr, "native proxy: listen needs an IP address");
    return nullptr;
  }
  int boundPort = 0;
  const char* failed = nullptr;
  int error = 0;
  if (!StartListening(engine, address, length, backlog, keepAlive, &boundPort, &failed, &error)) {
    return ThrowErrno(env, failed, error, where);
  }
  CHECK(napi_ref_threadsafe_function(env, engine->events));

  napi_value result;
  CHECK(napi_create_int32(env, boundPort, &result));
  return result;
}

napi_value SendCommand(napi_env env, napi_callback_info info, uint32_t command) {
  napi_value argv[1];
  JsEngine* engine = EngineCall(env, info, argv);
  if (!engine) return nullptr;
  if (engine->running && !engine->joined) Command(engine, command);
  return nullptr;
}

napi_value StopAcceptingJs(napi_env env, napi_callback_info info) {
  return SendCommand(env, info, kStopAccepting);
}

napi_value DestroyAllJs(napi_env env, napi_callback_info info) {
  return SendCommand(env, info, kDestroyAll);
}

// watchDrain(engine, on): while on, open reaching 0 posts a "drained" event
napi_value WatchDrain(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  JsEngine* engine = EngineCall(env, info, argv);
  if (!engine) return nullptr;
  bool on = false;
  CHECK(napi_get_value_bool(env, argv[1], &on));
  engine->watchDrain.store(on);
  return nullptr;
}

// handOff(engine, host, port): connections accepted from now on go to host:port (an IP address)
napi_value HandOffJs(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  JsEngine* engine = EngineCall(env, info, argv);
  if (!engine) return nullptr;
  std::string host;
  int32_t port = 0;
  sockaddr_storage address;
  socklen_t length = 0;
  if (!GetString(env, argv[1], &host) || napi_get_value_int32(env, argv[2], &port) != napi_ok ||
      port <= 0 || port > 65535 || !ParseAddress(host, port, &address, &length)) {
    napi_throw_type_error(env, nullptr, "native proxy: the handoff must be an IP address and a port");
    return nullptr;
  }
  if (engine->running && !engine->joined) HandOff(engine, address, length);
  return nullptr;
}

// close(engine): resets open connections, stops the loop thread and lets the process exit
napi_value CloseJs(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  JsEngine* engine = EngineCall(env, info, argv);
  if (!engine) return nullptr;
  Shutdown(engine);
  ReleaseEvents(engine);
  return nullptr;
}

}  // namespace
}  // namespace proxy_engine

NAPI_MODULE_INIT() {
  using namespace proxy_engine;
  napi_value counterCount;
  struct {
    const char* name;
    napi_callback callback;
  } functions[] = {
      {"create", Create},         {"listen", Listen},         {"stopAccepting", StopAcceptingJs},
      {"destroyAll", DestroyAllJs}, {"watchDrain", WatchDrain}, {"close", CloseJs},
      {"handOff", HandOffJs},
  };
  for (auto& function : functions) {
    napi_value value;
    if (napi_create_function(env, function.name, NAPI_AUTO_LENGTH, function.callback, nullptr, &value) != napi_ok)
      return nullptr;
    if (napi_set_named_property(env, exports, function.name, value) != napi_ok) return nullptr;
  }
  napi_create_int32(env, kCounterCount, &counterCount);
  napi_set_named_property(env, exports, "counterCount", counterCount);
  return exports;
}
