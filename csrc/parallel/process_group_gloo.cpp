// Constructs c10d's ProcessGroupGloo: the Gloo code itself is compiled into libtorch_cpu.so.
//
// Why this file includes Debian's gloo headers. The torch wheel ships
// torch/csrc/distributed/c10d/ProcessGroupGloo.hpp but not the <gloo/...> headers it
// includes, and c10d offers no C++ factory that returns a Gloo backend without naming the
// class. So we parse ProcessGroupGloo.hpp with the gloo headers of Debian's libgloo-dev
// (installed by scripts/setup.sh) and never link Debian's libgloo. That is sound because:
//   - ProcessGroupGloo and its Options hold gloo objects only behind shared_ptr/unique_ptr
//     (Options::devices, contexts_, store_, the work buffers), so their size and layout do not
//     depend on gloo's definitions; Debian's 2022 snapshot parses the header (the
//     GLOO_STORE_HAS_STORE_V2 block simply drops out);
//   - this file calls only out-of-line symbols that libtorch_cpu.so exports
//     (Options::create/create_default, createDeviceForHostname, the constructor) and uses
//     the result through c10d::Backend's virtual interface, so no gloo inline function is
//     instantiated here: libtinyseek.so defines no gloo:: symbol that could interpose
//     libtorch's (tests/python/test_pipeline_dist.py checks this with nm).
// The alternative of declaring the needed gloo classes ourselves would need an extra include
// directory for the <gloo/...> names; the Debian headers are the real declarations.
#include <cstdlib>
#include <string>

#include "csrc/parallel/process_group.h"

#if !__has_include(<gloo/context.h>)
#error "gloo headers missing: install Debian's libgloo-dev (scripts/setup.sh does), see docs/distributed.md"
#endif

#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO 1
#endif
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

namespace ts::parallel::detail {

c10::intrusive_ptr<c10d::Backend> make_gloo(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                            std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupGloo::Options::create(timeout);
  // GLOO_SOCKET_IFNAME (torch's variable) picks the interface; otherwise bind to the address
  // the rendezvous uses when it is loopback (single-machine runs never leave lo), else the
  // hostname's address as torch does by default.
  const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
  const char* master = std::getenv("MASTER_ADDR");
  const std::string addr = master ? master : "127.0.0.1";
  if (ifname && *ifname) {
    options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
  } else if (addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1") {
    options->devices.push_back(
        c10d::ProcessGroupGloo::createDeviceForHostname(addr == "localhost" ? "127.0.0.1" : addr));
  } else {
    options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  options->threads = 2;
  return c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, options);
}

}  // namespace ts::parallel::detail
