// Pictures of a simulated schedule: an SVG chart in the style of the DualPipe README figure,
// a text view for the terminal, and JSON for a Python plotter.
#pragma once

#include <string>

#include "csrc/parallel/schedule.h"
#include "csrc/parallel/simulator.h"

namespace ts::parallel {

// One row per rank, time on x; one rectangle per compute. Colour follows the micro-batch
// (micro-batches entering at rank 0 in blue-green-violet hues, those entering at rank
// R-1 in red-orange-yellow hues); the shade tells the pass: F light, B medium, W dark,
// BW medium and hatched, F&B split into its forward (top) and backward (bottom) halves
// inside a black border. Each rectangle carries data-* attributes and a tooltip.
// `timeline` must come from simulate(schedule, ...).
std::string render_svg(const Schedule& schedule, const Timeline& timeline);

struct TextOptions {
  double cells_per_time = 0;  // characters per time unit; 0 = auto: the shortest compute
                              // gets 4 cells unless the widest row would pass max_width
  int max_width = 240;        // auto scaling keeps rows within this many cells
};

// A header, then one line per rank: "r0 |F0--F1--B0-W0-...| busy .. bubble .. peak ..".
// Each compute starts with its label (F<m>, B<m>, W<m>, BW<m>, F<m>|B<m> for F&B, m the
// global micro-batch id) padded with '-' to its length and cut where it is shorter;
// '.' is idle.
std::string render_text(const Schedule& schedule, const Timeline& timeline);
std::string render_text(const Schedule& schedule, const Timeline& timeline, const TextOptions& options);

// {"kind", "ranks", "stages", "microbatches", "total", "critical_bubble", "busy": [R],
//  "bubble": [R], "peak_activations": [R], "actions": [R][{"op", "mb", "stage", "dir",
//  "start", "end"} plus "bwd_mb", "bwd_stage", "bwd_dir" for FB and "peer", "payload"
//  ("activation" | "gradient") for SEND/RECV]}
std::string to_json(const Schedule& schedule, const Timeline& timeline);

}  // namespace ts::parallel
