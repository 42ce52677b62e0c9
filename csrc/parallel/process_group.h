// Process groups over torch.distributed's c10d, from C++: TCPStore rendezvous, ProcessGroupGloo
// on CPU, ProcessGroupNCCL on GPU, and a watchdog that turns a dead peer into a clear error.
//
// Rendezvous follows torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT (and
// TORCHELASTIC_USE_AGENT_STORE, when torchrun's agent already hosts the store). Without
// WORLD_SIZE the process is a group of one, so every caller can use the same code path.
//
// Failure handling. Every rank bumps a heartbeat counter in the store (its own client
// connection, so a blocked store call elsewhere never delays it) and watches the others'. A
// rank whose counter stops for `dead_after`, a rank that posts an abort reason, or losing the
// store (its host died) is a failure: the watchdog records it, writes it to the store so
// every other rank learns the cause, and, if the process has not stopped on its own after
// `grace`, prints it and ends the process with status 1. Communication errors (Gloo reports a
// closed connection at once) are rethrown by wait() as DistError naming the failed rank once
// the watchdog has identified it. So a dead rank stops the others within about
// dead_after + grace, never a hang.
//
// The API is general on purpose (pipeline p2p today, expert-parallel all-to-all next):
// point-to-point, all-reduce, all-to-all, barrier, and sub-groups of any rank subset.
#pragma once

#include <torch/torch.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace ts::parallel {

// A failure of the distributed job (a peer died, timed out or aborted). what() names the rank.
struct DistError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// torchrun's variables, read and checked.
struct LaunchEnv {
  bool distributed = false;  // WORLD_SIZE was set
  int rank = 0;
  int world = 1;
  int local_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  bool agent_store = false;  // TORCHELASTIC_USE_AGENT_STORE=True: every rank is a store client
};
// Throws DistError naming a malformed or inconsistent variable (e.g. RANK >= WORLD_SIZE).
LaunchEnv read_launch_env();

struct DistOptions {
  std::string backend = "auto";                 // auto (nccl on cuda, else gloo) | gloo | nccl
  std::string device = "cpu";                   // cpu | cuda (cuda:LOCAL_RANK)
  std::chrono::milliseconds timeout{60'000};    // rendezvous, collectives and p2p
  std::chrono::milliseconds heartbeat{500};     // watchdog period
  std::chrono::milliseconds dead_after{5'000};  // a silent rank is dead after this
  std::chrono::milliseconds grace{3'000};       // then the process ends if still running
};

// A set of ranks with its own backend: the world, or a sub-group such as a pair of
// mirrored pipeline stages or an expert-parallel group.
struct Group {
  int rank = 0;  // this process within the group
  int size = 1;
  std::vector<int> ranks;  // global ranks, in group order
  c10::intrusive_ptr<c10d::Backend> backend;
};

class Dist {
 public:
  // Joins the job torchrun's variables describe (a group of one without them).
  static std::shared_ptr<Dist> init_from_env(const DistOptions& options = {});
  static std::shared_ptr<Dist> init(const LaunchEnv& env, const DistOptions& options);
  // Normal end: tells the others this rank is done, stops the watchdog, and (on the rank that
  // hosts the store) waits for every rank before the store goes away. After a failure it
  // only stops the watchdog and leaves the backend to process exit.
  ~Dist();
  Dist(const Dist&) = delete;
  Dist& operator=(const Dist&) = delete;

  int rank() const { return world_.rank; }
  int world_size() const { return world_.size; }
  int local_rank() const { return local_rank_; }
  const Group& world() const { return world_; }
  const std::string& backend_name() const { return backend_name_; }
  torch::Device device() const { return device_; }

  // Sub-group of `ranks` (global ids, any order). Every member must call it with the same
  // list; non-members must not. Cached: a second call with the same list returns the same.
  const Group& group(const std::vector<int>& ranks);

  // Point to point on the world group. Non-blocking: pass the Work to wait(). The tensor must
  // stay alive and untouched until then. `tag` tells messages on one channel apart (Gloo);
  // NCCL matches in order and ignores it.
  c10::intrusive_ptr<c10d::Work> isend(const at::Tensor& t, int dst, int tag);
  c10::intrusive_ptr<c10d::Work> irecv(const at::Tensor& t, int src, int tag);
  // One batch of p2p operations posted together (NCCL: one coalesced group, like
  // batch_isend_irecv); returns the works to wait for.
  struct P2POp {
    bool send = true;
    at::Tensor tensor;
    int peer = -1;
    int tag = 0;
  };
  std::vector<c10::intrusive_ptr<c10d::Work>> batch_isend_irecv(const std::vector<P2POp>& ops);

  // Waits for `work`; on failure throws DistError naming the failed rank (as far as the
  // watchdog could tell within dead_after) and `what` this rank was doing.
  void wait(const c10::intrusive_ptr<c10d::Work>& work, const std::string& what);

  // Non-blocking all-reduce (pass the Work to wait()); the tensors must stay alive and untouched
  // until then. `g` defaults to the world.
  c10::intrusive_ptr<c10d::Work> iall_reduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp op = c10d::ReduceOp::SUM,
                                             const Group* g = nullptr);
  // Blocking collectives; `g` defaults to the world.
  void all_reduce(std::vector<at::Tensor>& tensors, c10d::ReduceOp op = c10d::ReduceOp::SUM, const Group* g = nullptr);
  void broadcast(std::vector<at::Tensor>& tensors, int root, const Group* g = nullptr);
  // out/in are [sum(splits), ...]; splits count rows per destination/source rank (empty: even).
  void all_to_all_single(at::Tensor& out, at::Tensor& in, std::vector<int64_t> out_splits,
                         std::vector<int64_t> in_splits, const Group* g = nullptr);
  void barrier(const Group* g = nullptr);
  // Agreement of the ranks of `g` (default: the world) in one small all-reduce each: whether any
  // rank passed true; the smallest and largest value.
  bool any(bool local, const Group* g = nullptr);
  std::pair<int64_t, int64_t> min_max(int64_t v, const Group* g = nullptr);

  // Tells every rank to stop with `reason` (they raise DistError naming this rank).
  void abort(const std::string& reason);
  // What the watchdog found, if anything: "rank 2 stopped responding (...)".
  std::optional<std::string> failure() const;

 private:
  Dist() = default;
  void start_watchdog();
  void watchdog_loop();
  void record_failure(const std::string& message, bool announce);
  std::string explain(const std::string& what, const std::string& error);
  template <class F>
  c10::intrusive_ptr<c10d::Work> post(const std::string& what, F&& f);
  Group make_group(const std::vector<int>& ranks, const std::string& prefix);
  const Group& pick(const Group* g) const { return g ? *g : world_; }

  LaunchEnv env_;
  DistOptions options_;
  int local_rank_ = 0;
  std::string backend_name_;
  torch::Device device_{torch::kCPU};
  c10::intrusive_ptr<c10d::Store> store_;     // main client (or the server, on rank 0)
  c10::intrusive_ptr<c10d::Store> hb_store_;  // the watchdog's own connection
  Group world_;
  std::vector<std::unique_ptr<Group>> groups_;  // sub-groups, stable addresses

  std::thread watchdog_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  mutable std::mutex mu_;
  std::optional<std::string> failure_;
  std::chrono::steady_clock::time_point failed_at_;
};

// Rank layouts of a job whose world splits into groups of `size` consecutive ranks (expert-parallel
// groups, pipelines): the group holding `rank`, and the ranks at the same place in every group
// (its data-parallel replicas).
std::vector<int> consecutive_ranks(int rank, int size);
std::vector<int> strided_ranks(int rank, int size, int world);

// Tells the ranks of the job whose store is at master_addr:master_port to stop, with `reason`: a
// rank still joining the rendezvous raises DistError at once, a running one through its watchdog
// within a heartbeat. For `tinyseek launch` when one of its ranks exits. False (after at most
// 2 s) when the store is gone: its host, rank 0, died, and the others cannot rendezvous.
bool post_abort(const std::string& master_addr, int master_port, const std::string& reason);

namespace detail {
// Backend constructors; NCCL's lives in process_group_cuda.cpp and exists only with CUDA.
c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                            std::chrono::milliseconds timeout);
c10::intrusive_ptr<c10d::Backend> make_nccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                            std::chrono::milliseconds timeout);
bool nccl_available();
void set_cuda_device(int index);  // CUDA builds only
}  // namespace detail

}  // namespace ts::parallel
