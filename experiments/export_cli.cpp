// `tinyseek export RUN_DIR[/VARIANT] [--step N] --format hf --out DIR`: a trained run's checkpoint
// as a Hugging Face checkpoint folder (csrc/train/hf.h) that transformers opens offline. A model
// transformers cannot represent, a missing run or an occupied --out exits 2 naming it.
#include <fmt/format.h>

#include <iostream>
#include <memory>

#include "csrc/config/config.h"
#include "csrc/train/hf.h"
#include "csrc/train/trained_run.h"
#include "experiments/commands.h"

namespace ts::experiments {

namespace {

struct ExportArgs {
  train::RunRef run;
  std::string format = "hf";
  std::string out;
};

int export_command(const ExportArgs& a) {
  const train::TrainedRun trained = train::resolve_run(a.run);
  const std::string arch = train::hf_architecture(trained.config);  // exit 2 before loading anything
  nn::Transformer model = train::load_model(trained);
  const nlohmann::json provenance = {{"run", a.run.dir}, {"step", trained.step}, {"version", "0.1"}};
  train::export_hf(*model, trained.config, a.out, provenance);
  std::cout << fmt::format("{} (step {}) -> {}: {}, {} parameters\n", trained.dir.string(), trained.step, a.out, arch,
                           model->num_parameters());
  return 0;
}

}  // namespace

Command add_export_command(CLI::App& app) {
  auto a = std::make_shared<ExportArgs>();
  auto* sub = app.add_subcommand(
      "export", "Write a trained run's checkpoint as a Hugging Face model folder (DeepSeek-V3 for MLA, else Llama)");
  sub->add_option("run_dir", a->run.dir,
                  "Run folder: runs/<name>/<variant> (or runs/<name> with one variant), or hf:DIR")
      ->required();
  sub->add_option("--step", a->run.step, "Checkpoint step (default: the latest)")
      ->check(CLI::Range(int64_t{0}, int64_t{1} << 40));
  sub->add_option("--format", a->format, "Output format")->check(CLI::IsMember({"hf"}));
  sub->add_option("--out", a->out, "The folder to write (must not exist, or be empty)")->required();
  return {sub, [a] { return export_command(*a); }};
}

}  // namespace ts::experiments
