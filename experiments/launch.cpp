// `tinyseek launch`: a local torchrun. Starts N ranks of this binary (`tinyseek run CONFIG`)
// with torchrun's variables, prefixes their output with "[rank r] ", and if one rank fails,
// names it, gives the others --grace seconds to stop on their own (their watchdogs name the
// failed rank too), then terminates what is left and exits 1 (or 2 or 130 when that is how the failed rank exited).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "csrc/config/config.h"
#include "csrc/parallel/process_group.h"
#include "experiments/commands.h"
#include "experiments/kinds.h"

namespace ts::experiments {

namespace {

using Clock = std::chrono::steady_clock;

struct LaunchArgs {
  int nproc = 1;
  std::string config;
  std::vector<std::string> sets, variants;
  bool resume = false;
  bool no_report = false;
  double grace_s = 20;
  int port = 0;
};

volatile std::sig_atomic_t g_forward_signal = 0;
void remember_signal(int sig) { g_forward_signal = sig; }

// A free TCP port on the loopback interface (the kernel picks it; we release it at once).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("launch: socket: ") + std::strerror(errno));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    ::close(fd);
    throw std::runtime_error(std::string("launch: cannot find a free port: ") + std::strerror(errno));
  }
  ::close(fd);
  return ntohs(a.sin_port);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exited with code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("was killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "stopped";
}

struct Child {
  pid_t pid = -1;
  int out = -1, err = -1;  // read ends
  std::string out_buf, err_buf;
  bool running = true;
  int status = 0;
};

// Writes the complete lines of `buf` with the rank prefix; keeps a partial last line.
void flush_lines(std::string& buf, int rank, std::ostream& os, bool all) {
  size_t start = 0;
  for (size_t nl; (nl = buf.find('\n', start)) != std::string::npos; start = nl + 1)
    os << "[rank " << rank << "] " << buf.substr(start, nl - start) << "\n";
  buf.erase(0, start);
  if (all && !buf.empty()) {
    os << "[rank " << rank << "] " << buf << "\n";
    buf.clear();
  }
  os.flush();
}

int launch(const LaunchArgs& args) {
  // Parse and check the config here first: an error is reported once, not by every rank.
  const auto ex = config::load_experiment(args.config, args.sets);
  run::check_experiment(ex, kinds(), args.nproc);
  const int port = args.port > 0 ? args.port : free_port();
  const std::string self = std::filesystem::read_symlink("/proc/self/exe").string();

  std::vector<std::string> argv_s = {self, "run", args.config};
  for (const auto& s : args.sets) argv_s.insert(argv_s.end(), {"--set", s});
  for (const auto& v : args.variants) argv_s.insert(argv_s.end(), {"--variant", v});
  if (args.resume) argv_s.push_back("--resume");
  if (args.no_report) argv_s.push_back("--no-report");
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  argv.push_back(nullptr);

  std::cerr << fmt::format("tinyseek launch: {} ranks of `{}`, rendezvous at 127.0.0.1:{}\n", args.nproc,
                           fmt::join(argv_s.begin() + 1, argv_s.end(), " "), port);
  std::vector<Child> kids(args.nproc);
  for (int r = 0; r < args.nproc; ++r) {
    // Environment built before fork: only async-signal-safe calls between fork and exec.
    std::vector<std::string> env_s;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      bool ours = false;
      for (const char* k : {"RANK=", "WORLD_SIZE=", "LOCAL_RANK=", "LOCAL_WORLD_SIZE=", "MASTER_ADDR=", "MASTER_PORT=",
                            "TORCHELASTIC_USE_AGENT_STORE="})
        ours |= kv.rfind(k, 0) == 0;
      if (!ours) env_s.push_back(kv);
    }
    for (const auto& kv : {fmt::format("RANK={}", r), fmt::format("WORLD_SIZE={}", args.nproc),
                           fmt::format("LOCAL_RANK={}", r), fmt::format("LOCAL_WORLD_SIZE={}", args.nproc),
                           std::string("MASTER_ADDR=127.0.0.1"), fmt::format("MASTER_PORT={}", port)})
      env_s.push_back(kv);
    std::vector<char*> envp;
    for (auto& s : env_s) envp.push_back(s.data());
    envp.push_back(nullptr);

    int po[2], pe[2];
    if (::pipe2(po, O_CLOEXEC) != 0 || ::pipe2(pe, O_CLOEXEC) != 0)
      throw std::runtime_error(std::string("launch: pipe: ") + std::strerror(errno));
    const pid_t parent = ::getpid();
    const pid_t pid = ::fork();
    if (pid < 0) throw std::runtime_error(std::string("launch: fork: ") + std::strerror(errno));
    if (pid == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // the ranks never outlive the launcher
      if (::getppid() != parent) ::_exit(1);
      ::setpgid(0, 0);  // Ctrl-C reaches the launcher only, which forwards it once
      ::dup2(po[1], STDOUT_FILENO);
      ::dup2(pe[1], STDERR_FILENO);
      ::execve(self.c_str(), argv.data(), envp.data());
      ::_exit(127);
    }
    ::close(po[1]);
    ::close(pe[1]);
    kids[r].pid = pid;
    kids[r].out = po[0];
    kids[r].err = pe[0];
  }
  std::signal(SIGINT, remember_signal);
  std::signal(SIGTERM, remember_signal);

  int failed_rank = -1;
  std::string failed_how;
  Clock::time_point deadline{}, kill_at{};
  bool terminated = false, killed = false;
  auto running = [&] {
    int n = 0;
    for (const auto& k : kids) n += k.running || k.out >= 0 || k.err >= 0;
    return n;
  };
  while (running() > 0) {
    std::vector<pollfd> fds;
    std::vector<std::pair<int, bool>> who;  // (rank, is stdout)
    for (int r = 0; r < args.nproc; ++r) {
      if (kids[r].out >= 0) fds.push_back({kids[r].out, POLLIN, 0}), who.push_back({r, true});
      if (kids[r].err >= 0) fds.push_back({kids[r].err, POLLIN, 0}), who.push_back({r, false});
    }
    if (!fds.empty())
      ::poll(fds.data(), fds.size(), 100);
    else
      ::usleep(100 * 1000);
    char buf[65536];
    for (size_t i = 0; i < fds.size(); ++i) {
      if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      auto& k = kids[who[i].first];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof(buf));
      std::string& b = who[i].second ? k.out_buf : k.err_buf;
      if (n > 0) {
        b.append(buf, static_cast<size_t>(n));
        flush_lines(b, who[i].first, who[i].second ? std::cout : std::cerr, false);
      } else if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN)) {
        flush_lines(b, who[i].first, who[i].second ? std::cout : std::cerr, true);
        ::close(fds[i].fd);
        (who[i].second ? k.out : k.err) = -1;
      }
    }
    for (int r = 0; r < args.nproc; ++r) {
      auto& k = kids[r];
      if (!k.running || ::waitpid(k.pid, &k.status, WNOHANG) != k.pid) continue;
      k.running = false;
      const bool ok = WIFEXITED(k.status) && WEXITSTATUS(k.status) == 0;
      if (!ok && failed_rank < 0 && !terminated) {
        failed_rank = r;
        failed_how = describe_status(k.status);
        std::cerr << fmt::format("tinyseek launch: rank {} {}; waiting up to {:.0f} s for the other ranks to stop\n", r,
                                 failed_how, args.grace_s)
                  << std::flush;
        // The others learn it from the store at once, even those still joining the rendezvous
        // (their watchdogs, which find a silent rank after dist.dead_after_s, start only after it).
        // Without a store (rank 0, its host, died) the others can neither rendezvous nor learn
        // it: they are ended at once instead of after the grace.
        deadline = Clock::now() + std::chrono::milliseconds(static_cast<int64_t>(args.grace_s * 1000));
        if (!(WIFEXITED(k.status) && WEXITSTATUS(k.status) == 130) &&
            !parallel::post_abort("127.0.0.1", port, fmt::format("tinyseek launch: rank {} {}", r, failed_how))) {
          std::cerr << "tinyseek launch: the rendezvous store (rank 0) is gone; stopping the other ranks now\n";
          deadline = Clock::now();
        }
      }
    }
    const auto now = Clock::now();
    const int sig = g_forward_signal;
    if (sig) {
      g_forward_signal = 0;
      for (auto& k : kids)
        if (k.running) ::kill(k.pid, sig);
    }
    if (failed_rank >= 0 && !terminated && now > deadline) {
      for (auto& k : kids)
        if (k.running) ::kill(k.pid, SIGTERM);
      terminated = true;
      kill_at = now + std::chrono::seconds(3);
    }
    if (terminated && !killed && now > kill_at) {
      for (auto& k : kids)
        if (k.running) ::kill(k.pid, SIGKILL);
      killed = true;
    }
  }
  if (failed_rank >= 0) {
    std::string others;
    for (int r = 0; r < args.nproc; ++r)
      if (r != failed_rank)
        others += fmt::format("{}rank {} {}", others.empty() ? "" : ", ", r, describe_status(kids[r].status));
    std::cerr << fmt::format("tinyseek launch: failed: rank {} {} (then: {})\n", failed_rank, failed_how, others);
    // A usage/config error (2) or an interrupt (130) on the first failing rank is the job's status.
    const int st = kids[failed_rank].status;
    if (WIFEXITED(st) && (WEXITSTATUS(st) == 2 || WEXITSTATUS(st) == 130)) return WEXITSTATUS(st);
    return 1;
  }
  return 0;
}

}  // namespace

Command add_launch_command(CLI::App& app) {
  auto args = std::make_shared<LaunchArgs>();
  auto* sub = app.add_subcommand("launch", "Start N local ranks of `tinyseek run CONFIG` with torchrun's variables");
  sub->add_option("--nproc", args->nproc, "Number of ranks (processes) to start")
      ->required()
      ->check(CLI::Range(1, 4096));
  sub->add_option("config", args->config, "YAML config, e.g. configs/pipeline_parity.yaml")->required();
  sub->add_option("--set", args->sets, "Override a key in every rank: --set pipeline.schedule=zb1p (repeatable)");
  sub->add_option("--variant", args->variants, "Run only this variant (repeatable)");
  sub->add_flag("--resume", args->resume, "Pass --resume to every rank");
  sub->add_flag("--no-report", args->no_report, "Pass --no-report to every rank");
  sub->add_option("--grace", args->grace_s, "Seconds the other ranks get to stop on their own after one fails")
      ->check(CLI::Range(0.0, 3600.0));
  sub->add_option("--master-port", args->port, "Rendezvous port (default: a free one)")->check(CLI::Range(0, 65535));
  return {sub, [args] { return launch(*args); }};
}

}  // namespace ts::experiments
