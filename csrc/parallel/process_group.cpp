#include "csrc/parallel/process_group.h"

#include <torch/csrc/distributed/c10d/HashStore.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <cstdlib>
#include <iostream>

namespace ts::parallel {

namespace {

using Clock = std::chrono::steady_clock;

std::optional<std::string> env(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  return std::string(v);
}

int env_int(const char* name, int fallback, int lo, int hi) {
  const auto v = env(name);
  if (!v) return fallback;
  try {
    size_t used = 0;
    const int x = std::stoi(*v, &used);
    if (used == v->size() && x >= lo && x <= hi) return x;
  } catch (const std::exception&) {
  }
  throw DistError(fmt::format("environment variable {}='{}': expected an integer in [{}, {}]", name, *v, lo, hi));
}

std::string error_text(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

std::string hb_key(int r) { return "ts/hb/" + std::to_string(r); }
std::string done_key(int r) { return "ts/done/" + std::to_string(r); }
const std::string kAbortKey = "ts/abort";
const std::string kFinishedKey = "ts/finished";
const std::string kJoinedKey = "ts/joined";

std::string as_string(const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); }
std::vector<uint8_t> as_bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

}  // namespace

#ifndef TINYSEEK_WITH_CUDA
namespace detail {
bool nccl_available() { return false; }
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>&, int, int,
                                            std::chrono::milliseconds) {
  throw DistError("dist.backend 'nccl' needs a CUDA build of tinyseek");
}
void set_cuda_device(int) { throw DistError("dist: device 'cuda' needs a CUDA build of tinyseek"); }
}  // namespace detail
#endif

LaunchEnv read_launch_env() {
  LaunchEnv e;
  if (!env("WORLD_SIZE")) return e;
  e.distributed = true;
  e.world = env_int("WORLD_SIZE", 1, 1, 1 << 20);
  e.rank = env_int("RANK", 0, 0, e.world - 1);
  if (e.world > 1 && !env("RANK")) throw DistError("WORLD_SIZE=" + std::to_string(e.world) + " but RANK is not set");
  e.local_rank = env_int("LOCAL_RANK", e.rank, 0, 1 << 20);
  e.master_addr = env("MASTER_ADDR").value_or("127.0.0.1");
  e.master_port = env_int("MASTER_PORT", 29500, 1, 65535);
  const auto agent = env("TORCHELASTIC_USE_AGENT_STORE");
  e.agent_store = agent && (*agent == "True" || *agent == "true" || *agent == "1");
  return e;
}

std::shared_ptr<Dist> Dist::init_from_env(const DistOptions& options) { return init(read_launch_env(), options); }

std::shared_ptr<Dist> Dist::init(const LaunchEnv& e, const DistOptions& options) {
  std::shared_ptr<Dist> d(new Dist());
  d->env_ = e;
  d->options_ = options;
  d->local_rank_ = e.local_rank;
  if (options.device == "cuda") {
    detail::set_cuda_device(e.local_rank);
    d->device_ = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(e.local_rank));
  } else if (options.device != "cpu") {
    throw DistError("dist: device must be cpu or cuda, got '" + options.device + "'");
  }
  std::string backend = options.backend;
  if (backend == "auto") backend = options.device == "cuda" ? "nccl" : "gloo";
  if (backend != "gloo" && backend != "nccl")
    throw DistError("dist.backend: expected auto, gloo or nccl, got '" + backend + "'");
  if (backend == "nccl" && options.device != "cuda") throw DistError("dist.backend 'nccl' runs on cuda devices only");
  d->backend_name_ = backend;

  if (e.world == 1) {
    d->store_ = c10::make_intrusive<c10d::HashStore>();
  } else {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(e.master_port);
    so.isServer = e.rank == 0 && !e.agent_store;
    so.numWorkers = e.world;
    so.waitWorkers = false;  // the join below waits, and listens for an abort meanwhile
    so.timeout = options.timeout;
    // Fault injection for tests: this rank dies before it joins (TINYSEEK_DEBUG_EXIT_BEFORE_JOIN=r).
    if (const auto r = env("TINYSEEK_DEBUG_EXIT_BEFORE_JOIN"); r && *r == std::to_string(e.rank)) {
      std::fprintf(stderr, "debug: TINYSEEK_DEBUG_EXIT_BEFORE_JOIN: rank %d exits before the rendezvous\n", e.rank);
      std::fflush(stderr);
      std::_Exit(17);
    }
    try {
      d->store_ = c10::make_intrusive<c10d::TCPStore>(e.master_addr, so);
      // Join: every rank counts itself in and waits for the others. A rank that dies first never
      // counts in; `tinyseek launch` then posts why under the abort key, which ends the wait at
      // once instead of at the timeout.
      d->store_->add(kJoinedKey, 1);
      const auto until = Clock::now() + options.timeout;
      for (int64_t joined = 0; (joined = d->store_->add(kJoinedKey, 0)) < e.world;) {
        if (d->store_->check({kAbortKey}))
          throw DistError(fmt::format("rank {}: the job stopped before every rank joined ({} of {}): {}", e.rank,
                                      joined, e.world, as_string(d->store_->get(kAbortKey))));
        if (Clock::now() > until)
          throw DistError(
              fmt::format("rank {}: {} of {} ranks joined the rendezvous at {}:{} within {} s (dist.timeout_s)", e.rank,
                          joined, e.world, e.master_addr, e.master_port, options.timeout.count() / 1000.0));
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    } catch (const DistError&) {
      d->failed_ = true;  // the destructor must not wait for ranks that will never finish
      throw;
    } catch (const std::exception& ex) {
      d->failed_ = true;
      throw DistError(fmt::format("rank {}: rendezvous at {}:{} failed (world size {}, timeout {} s): {}", e.rank,
                                  e.master_addr, e.master_port, e.world, options.timeout.count() / 1000.0,
                                  error_text(ex)));
    }
  }
  std::vector<int> all(e.world);
  for (int r = 0; r < e.world; ++r) all[r] = r;
  d->world_ = d->make_group(all, "pg/world");
  if (e.world > 1) {
    d->hb_store_ = d->store_->clone();
    d->hb_store_->add(hb_key(e.rank), 1);
    d->start_watchdog();
  }
  return d;
}

Group Dist::make_group(const std::vector<int>& ranks, const std::string& prefix) {
  Group g;
  g.ranks = ranks;
  g.size = static_cast<int>(ranks.size());
  g.rank = -1;
  for (int i = 0; i < g.size; ++i)
    if (ranks[i] == env_.rank) g.rank = i;
  if (g.rank < 0) throw DistError(fmt::format("rank {} is not a member of group {}", env_.rank, prefix));
  auto store = c10::make_intrusive<c10d::PrefixStore>(prefix, store_);
  try {
    g.backend = backend_name_ == "nccl" ? detail::make_nccl(store, g.rank, g.size, options_.timeout)
                                        : detail::make_gloo(store, g.rank, g.size, options_.timeout);
  } catch (const std::exception& ex) {
    throw DistError(fmt::format("rank {}: creating the {} backend for {} failed: {}", env_.rank, backend_name_, prefix,
                                error_text(ex)));
  }
  return g;
}

const Group& Dist::group(const std::vector<int>& ranks) {
  for (const auto& g : groups_)
    if (g->ranks == ranks) return *g;
  std::string prefix = fmt::format("pg/group_{}", fmt::join(ranks, "_"));
  groups_.push_back(std::make_unique<Group>(make_group(ranks, prefix)));
  return *groups_.back();
}

Dist::~Dist() {
  if (watchdog_.joinable()) {
    if (!failed_) {
      try {
        store_->set(done_key(env_.rank), as_bytes("1"));
      } catch (const std::exception&) {
        failed_ = true;
      }
    }
    stop_ = true;
    watchdog_.join();
  }
  if (failed_) {
    // The store's host lingers a moment so the others can still read why the job stops.
    if (env_.world > 1 && env_.rank == 0 && !env_.agent_store) std::this_thread::sleep_for(4 * options_.heartbeat);
    // A peer is gone: tearing the backends down could wait on it. The process is about to end.
    for (auto& g : groups_) (void)g->backend.release();
    (void)world_.backend.release();
    (void)store_.release();
    (void)hb_store_.release();
    return;
  }
  groups_.clear();
  world_.backend.reset();
  if (env_.world > 1) {
    try {
      store_->add(kFinishedKey, 1);
      // The store's host leaves last, so no rank loses the store before it is done with it.
      if (env_.rank == 0 && !env_.agent_store) {
        const auto until = Clock::now() + options_.timeout;
        while (store_->add(kFinishedKey, 0) < env_.world && Clock::now() < until)
          std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
    } catch (const std::exception&) {
    }
  }
}

void Dist::start_watchdog() {
  watchdog_ = std::thread([this] { watchdog_loop(); });
}

void Dist::record_failure(const std::string& message, bool announce) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (failure_) return;
    failure_ = message;
    failed_at_ = Clock::now();
  }
  failed_ = true;
  if (announce) {
    try {
      if (!hb_store_->check({kAbortKey}))
        hb_store_->set(kAbortKey, as_bytes("rank " + std::to_string(env_.rank) + " reports: " + message));
    } catch (const std::exception&) {
    }
  }
}

void Dist::watchdog_loop() {
  const int W = env_.world, me = env_.rank;
  std::vector<int64_t> last(W, -1);
  std::vector<Clock::time_point> seen(W, Clock::now());
  std::vector<bool> done(W, false);
  while (!stop_) {
    for (auto slept = std::chrono::milliseconds(0); slept < options_.heartbeat && !stop_;
         slept += std::chrono::milliseconds(20))
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    if (stop_) break;
    if (failed_) {
      std::optional<std::string> f = failure();
      std::lock_guard<std::mutex> lock(mu_);
      if (f && Clock::now() - failed_at_ > options_.grace) {
        std::fprintf(stderr, "[rank %d] tinyseek: stopping: %s\n", me, f->c_str());
        std::fflush(stderr);
        std::_Exit(1);
      }
      continue;
    }
    try {
      hb_store_->add(hb_key(me), 1);
      if (hb_store_->check({kAbortKey})) {
        record_failure(as_string(hb_store_->get(kAbortKey)), false);
        continue;
      }
      const auto now = Clock::now();
      for (int q = 0; q < W; ++q) {
        if (q == me || done[q]) continue;
        const int64_t v = hb_store_->add(hb_key(q), 0);
        if (v != last[q]) {
          last[q] = v;
          seen[q] = now;
        } else if (now - seen[q] > options_.dead_after) {
          if (hb_store_->check({done_key(q)})) {
            done[q] = true;
            continue;
          }
          const double s = std::chrono::duration<double>(now - seen[q]).count();
          record_failure(fmt::format("rank {} stopped responding: no heartbeat for {:.1f} s (it died or hangs)", q, s),
                         true);
          break;
        }
      }
    } catch (const std::exception& ex) {
      if (stop_) break;
      record_failure(env_.agent_store
                         ? fmt::format("lost the rendezvous store at {}:{} ({})", env_.master_addr, env_.master_port,
                                       error_text(ex))
                         : fmt::format("rank 0 is gone: it hosts the rendezvous store at {}:{}, which stopped "
                                       "answering ({})",
                                       env_.master_addr, env_.master_port, error_text(ex)),
                     false);
    }
  }
}

std::optional<std::string> Dist::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void Dist::abort(const std::string& reason) {
  if (env_.world == 1) return;
  record_failure("rank " + std::to_string(env_.rank) + " aborted: " + reason, true);
}

std::string Dist::explain(const std::string& what, const std::string& error) {
  // Gloo reports a closed connection at once; give the watchdog the time it needs to name
  // the rank that caused it.
  const auto until = Clock::now() + options_.dead_after + 3 * options_.heartbeat;
  while (!failure() && Clock::now() < until && env_.world > 1)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  failed_ = true;
  const auto f = failure();
  return fmt::format("rank {}: {} failed: {} [{}]", env_.rank, what,
                     f ? *f : std::string("no rank identified as failed"), error);
}

// Posting an operation can fail at once too (Gloo throws when the peer's connection is already
// closed): such errors go through explain() like those wait() sees, so that they name the rank
// that caused them rather than this one.
template <class F>
c10::intrusive_ptr<c10d::Work> Dist::post(const std::string& what, F&& f) {
  try {
    return f();
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& ex) {
    throw DistError(explain(what, error_text(ex)));
  }
}

c10::intrusive_ptr<c10d::Work> Dist::isend(const at::Tensor& t, int dst, int tag) {
  std::vector<at::Tensor> v{t};
  return post(fmt::format("send to rank {}", dst), [&] { return world_.backend->send(v, dst, tag); });
}

c10::intrusive_ptr<c10d::Work> Dist::irecv(const at::Tensor& t, int src, int tag) {
  std::vector<at::Tensor> v{t};
  return post(fmt::format("recv from rank {}", src), [&] { return world_.backend->recv(v, src, tag); });
}

std::vector<c10::intrusive_ptr<c10d::Work>> Dist::batch_isend_irecv(const std::vector<P2POp>& ops) {
  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  if (ops.empty()) return works;
  const bool coalesce = backend_name_ == "nccl";
  if (coalesce) world_.backend->startCoalescing();
  for (const auto& op : ops)
    works.push_back(op.send ? isend(op.tensor, op.peer, op.tag) : irecv(op.tensor, op.peer, op.tag));
  if (coalesce) {
    auto w = world_.backend->endCoalescing();
    works.clear();
    if (w) works.push_back(w);
  }
  return works;
}

void Dist::wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what) {
  bool ok = false;
  std::string err;
  try {
    ok = work->wait(options_.timeout);
    if (!ok) err = fmt::format("timed out after {} s", options_.timeout.count() / 1000.0);
  } catch (const std::exception& ex) {
    err = error_text(ex);
  }
  if (!ok) throw DistError(explain(what, err));
}

c10::intrusive_ptr<c10d::Work> Dist::iall_reduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp op, const Group* g) {
  c10d::AllreduceOptions o;
  o.reduceOp = op;
  o.timeout = options_.timeout;
  return post("all_reduce", [&] { return pick(g).backend->allreduce(tensors, o); });
}

void Dist::all_reduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp op, const Group* g) {
  wait(iall_reduce(tensors, op, g), "all_reduce");
}

void Dist::broadcast(std::vector<at::Tensor>& tensors, int root, const Group* g) {
  c10d::BroadcastOptions o;
  o.rootRank = root;
  o.timeout = options_.timeout;
  wait(post("broadcast", [&] { return pick(g).backend->broadcast(tensors, o); }), "broadcast");
}

void Dist::all_to_all_single(at::Tensor& out, at::Tensor& in, std::vector<int64_t> out_splits,
                             std::vector<int64_t> in_splits, const Group* g) {
  c10d::AllToAllOptions o;
  o.timeout = options_.timeout;
  wait(post("all_to_all", [&] { return pick(g).backend->alltoall_base(out, in, out_splits, in_splits, o); }),
       "all_to_all");
}

void Dist::barrier(const Group* g) {
  c10d::BarrierOptions o;
  o.timeout = options_.timeout;
  wait(post("barrier", [&] { return pick(g).backend->barrier(o); }), "barrier");
}

std::vector<int> consecutive_ranks(int rank, int size) {
  std::vector<int> out;
  for (int r = (rank / size) * size; r < (rank / size + 1) * size; ++r) out.push_back(r);
  return out;
}

std::vector<int> strided_ranks(int rank, int size, int world) {
  std::vector<int> out;
  for (int r = rank % size; r < world; r += size) out.push_back(r);
  return out;
}

bool Dist::any(bool local, const Group* g) {
  std::vector<at::Tensor> t{torch::tensor({local ? 1 : 0}, torch::kInt).to(device_)};
  all_reduce(t, c10d::ReduceOp::MAX, g);
  return t[0].item<int>() != 0;
}

std::pair<int64_t, int64_t> Dist::min_max(int64_t v, const Group* g) {
  // max of (-v, v) gives both ends in one all-reduce.
  std::vector<at::Tensor> t{torch::tensor({-v, v}, torch::kLong).to(device_)};
  all_reduce(t, c10d::ReduceOp::MAX, g);
  auto c = t[0].cpu();
  return {-c[0].item<int64_t>(), c[1].item<int64_t>()};
}

bool post_abort(const std::string& master_addr, int master_port, const std::string& reason) {
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<std::uint16_t>(master_port);
    so.isServer = false;
    so.waitWorkers = false;
    so.timeout = std::chrono::milliseconds(2000);
    auto store = c10::make_intrusive<c10d::TCPStore>(master_addr, so);
    if (!store->check({kAbortKey})) store->set(kAbortKey, as_bytes(reason));
    return true;
  } catch (const std::exception&) {
    return false;  // no store: its host, rank 0, is the one that died
  }
}

}  // namespace ts::parallel
