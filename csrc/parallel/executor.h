// Runs a pipeline Schedule for real over c10d with the foundation's transformer split into
// stages: stage s owns a contiguous range of blocks; stage 0 also the embedding, the last
// stage the final norm, the head and the loss.
//
// Each rank walks its own action list (schedule.h): RECV posts an irecv, SEND an isend of an
// activation or input gradient this rank produced, and computes wait for their inputs.
// Backward is split (split_backward.h): B sends the input gradient at once and leaves the
// weight gradient to W; BW does both; FB runs one unit's forward, then another's full
// backward, with the forward's activation already travelling while the backward computes:
// on CPU the two halves run one after the other on one thread; on CUDA each direction's
// forwards run on their own stream, so the backward (replayed by autograd on the stream of its
// own forward, the other direction's) overlaps the forward on the GPU. (The CUDA path compiles
// but has not run on a GPU yet.) In DualPipe every stage
// lives on two ranks (rank r holds stages r and R-1-r, as in DualPipe's own example), each
// copy sees half the micro-batches, and the pair all-reduces the gradients of both stages
// after the step, so both copies hold the full gradient and stay equal under the optimizer.
// The step's loss is the mean of the micro-batch losses, and every parameter gradient is
// the gradient of that mean: what one process gets from the whole batch. The MoE balance
// losses of a stage's layers ride on the stage's output (nn::attach_aux_loss), each micro-batch's
// weighted 1/M like its cross-entropy, so every backward includes them.
#pragma once

#include <torch/torch.h>

#include <c10/core/Stream.h>

#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "csrc/nn/transformer.h"
#include "csrc/parallel/process_group.h"
#include "csrc/parallel/schedule.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {

struct StageRange {
  int stage = 0;
  int64_t begin = 0, end = 0;  // blocks [begin, end)
  bool first = false, last = false;
};
// Contiguous, as even as possible, earlier stages taking the remainder. Throws
// std::invalid_argument unless 1 <= stages <= n_layers.
std::vector<StageRange> split_stages(int64_t n_layers, int stages);
// The stage a transformer parameter belongs to, from its name ("embed.*", "blocks.<i>.*",
// "norm.*", "head.*"). Throws std::invalid_argument for a name outside these.
int stage_of_parameter(const std::string& name, const std::vector<StageRange>& stages);

// The step one process computes without a pipeline, for parity checks: the whole model over the
// M micro-batches of inputs/targets [M*b, T] one after another, each contributing (cross-entropy,
// with MTP the depths' weighted by mtp_loss_weight / D, + MoE balance losses) / M to the objective.
// Returns the mean main cross-entropy and every parameter's
// gradient; leaves the model's gradients and MoE step loads cleared.
struct SequentialReference {
  double loss = 0;
  std::map<std::string, at::Tensor> grads;
};
SequentialReference sequential_reference(nn::Transformer& model, const at::Tensor& inputs, const at::Tensor& targets,
                                         int M, double mtp_loss_weight);

struct ExecutorOptions {
  std::string p2p = "auto";   // auto (gloo: per_op, nccl: batched) | per_op | batched (schedule.h)
  int debug_exit_after = -1;  // fault injection: std::_Exit(17) after this many actions of a step
};

struct StepResult {
  double loss = 0;                       // mean micro-batch loss, the same on every rank
  double seconds = 0;                    // step time: last compute end over all ranks
  std::vector<double> busy;              // [R] compute seconds per rank
  std::vector<std::vector<Span>> spans;  // [R][action] seconds from the step start
  // CPU time (CLOCK_THREAD_CPUTIME_ID) of each action on its rank's main thread: a compute's own
  // work, without the time it waited for a core when ranks share cores ([R][action], seconds).
  // On CUDA only the host side of the work.
  std::vector<std::vector<double>> cpu;
  // [R] CPU seconds of the rank's other threads during the step: the transport's (Gloo's).
  std::vector<double> background_cpu;
};

struct StepContext;  // per-step state, executor.cpp

class PipelineExecutor {
 public:
  // `model` is the whole transformer, initialized identically on every rank; this rank uses
  // (and trains) the stages its schedule places on it. pipeline_ranks: the global ranks of this
  // pipeline in schedule order (empty: the world); with data parallelism each replica is one.
  PipelineExecutor(Dist& dist, Schedule schedule, nn::Transformer model, ExecutorOptions options = {},
                   std::vector<int> pipeline_ranks = {});

  // One step over inputs/targets [M*b, T] (int64, the whole batch on every rank; each rank
  // reads the micro-batches its stages need). Leaves the gradient of the mean micro-batch
  // loss in .grad of this rank's parameters (mirror-reduced for DualPipe).
  StepResult step(const at::Tensor& inputs, const at::Tensor& targets);

  // After the optimizer step: the loss-free bias updates of the MoE layers of the held stages
  // (DualPipe's two copies of a stage first sum the loads each saw, so both update alike).
  void after_optimizer_step();

  // The MTP loss weight of the coming step (model.mtp.loss_weight, or its switch value).
  void set_mtp_loss_weight(double w) { mtp_loss_weight_ = w; }

  // Fault injection for tests (ExecutorOptions::debug_exit_after), per step.
  void set_debug_exit_after(int actions) { options_.debug_exit_after = actions; }

  const Schedule& schedule() const { return schedule_; }
  const std::vector<StageRange>& stages() const { return ranges_; }
  const std::vector<int>& held_stages() const { return held_; }  // ascending
  // Parameters of the held stages, in (stage, module order); for DualPipe, owned() is true
  // only for the copy that counts in a global norm (stage s is owned by rank s).
  struct Param {
    std::string name;
    torch::Tensor tensor;
    int stage;
    bool owned;
  };
  const std::vector<Param>& parameters() const { return params_; }

 private:
  void wait_inputs(const Action& a, StepContext& ctx);
  void forward(const Unit& u, StepContext& ctx);
  at::Tensor backward_root_grad(const Unit& u, StepContext& ctx);
  void backward(const Unit& u, bool defer_weight, StepContext& ctx);
  void weight(const Unit& u, StepContext& ctx);
  void reduce_mirrors();
  void reduce_shared_embedding();  // the MTP's copy of the embedding on the last stage's rank

  Dist& dist_;
  Schedule schedule_;
  std::vector<int> ranks_;       // global rank of each pipeline rank
  int me_ = 0;                   // this process's pipeline rank
  const Group* pipe_ = nullptr;  // the pipeline's ranks as a group (nullptr: the world)
  nn::Transformer model_;
  ExecutorOptions options_;
  bool batched_ = false;
  std::vector<StageRange> ranges_;
  std::vector<int> held_;
  std::vector<Param> params_;
  std::vector<int> embed_pair_;  // the ranks of the first and last stage, when MTP shares the embedding across them
  double mtp_loss_weight_ = 0.3;
  std::vector<c10::Stream> forward_streams_;  // CUDA only: one per direction, made on first use
};

}  // namespace ts::parallel
