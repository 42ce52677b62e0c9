// Chart output: exact text for a small case, SVG structure and escaping, JSON content.
#include <gtest/gtest.h>

#include <stdexcept>
#include <string>

#if __has_include(<nlohmann/json.hpp>)
#include <nlohmann/json.hpp>
#define TS_HAVE_NLOHMANN_JSON 1
#endif

#include "csrc/parallel/chart.h"

namespace ts::parallel {
namespace {

size_t count(const std::string& hay, const std::string& needle) {
  size_t n = 0;
  for (size_t at = hay.find(needle); at != std::string::npos; at = hay.find(needle, at + 1)) ++n;
  return n;
}

size_t compute_actions(const Schedule& s) {
  size_t n = 0;
  for (const auto& list : s.actions)
    for (const Action& a : list) n += a.is_compute();
  return n;
}

// 1F1B on 2 ranks, 2 micro-batches, F = B = W = 1: rank 1 runs F0 at 1, BW0 at 2-4, F1,
// BW1 at 5-7; rank 0 waits for each gradient. Two cells per time unit.
TEST(ChartTest, TextViewIsExact) {
  const Schedule s = make_schedule(ScheduleKind::k1F1B, 2, 2);
  const Costs c{.F = 1, .B = 1, .W = 1};
  TextOptions opt;
  opt.cells_per_time = 2;
  const std::string text = render_text(s, simulate(s, c), opt);
  const std::string want =
      "1f1b: 2 ranks, 2 stages, 2 micro-batches; step time 9, critical bubble 3; 1 cell = 0.5 time units\n"
      "F<m> forward, B<m> backward for inputs, W<m> weights, BW<m> full backward, F<m>|B<n> overlapped, . "
      "idle\n"
      "r0  |F0F1....BW0-..BW1-| busy 6 bubble 3 peak 2\n"
      "r1  |..F0BW0-F1BW1-....| busy 6 bubble 3 peak 1\n";
  EXPECT_EQ(text, want);
}

TEST(ChartTest, TextViewAutoScaleFitsWidthAndMarksOverlap) {
  const Schedule s = make_schedule(ScheduleKind::kDualPipe, 8, 20);
  const Costs c{.F = 10, .B = 10, .W = 3, .FB = 20};
  const Timeline tl = simulate(s, c);
  for (int width : {120, 240}) {
    TextOptions opt;
    opt.max_width = width;
    const std::string text = render_text(s, tl, opt);
    size_t rows = 0;
    for (size_t at = text.find("\nr"); at != std::string::npos; at = text.find("\nr", at + 1), ++rows) {
      const size_t open = text.find('|', at), close = text.find("| busy", at);
      EXPECT_LE(close - open - 1, static_cast<size_t>(width));
    }
    EXPECT_EQ(rows, 8u);
    // Overlapped steps name both halves where they fit, else show the op name.
    EXPECT_NE(text.find(width == 240 ? "F14|B0" : "FB"), std::string::npos) << text;
    EXPECT_NE(text.find("micro-batches 10+ enter at rank 7"), std::string::npos);
  }
}

TEST(ChartTest, SvgHasOneShapePerComputeAndALegend) {
  const Schedule s = make_schedule(ScheduleKind::kDualPipe, 4, 8);
  const Costs c{.F = 2, .B = 2, .W = 1, .FB = 4};
  const std::string svg = render_svg(s, simulate(s, c));
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_EQ(count(svg, "<g class=\"op\""), compute_actions(s));
  EXPECT_EQ(count(svg, "<g "), count(svg, "</g>"));
  EXPECT_EQ(count(svg, "<text"), count(svg, "</text>"));
  EXPECT_GT(count(svg, "data-dir=\"1\""), 0u);  // the other direction is drawn, in its own hues
  EXPECT_GT(count(svg, "data-op=\"FB\""), 0u);
  for (const char* legend : {"F forward", "B backward for inputs", "W backward for weights", "BW full backward",
                             "F&amp;B overlapped", "enter at rank 3"})
    EXPECT_NE(svg.find(legend), std::string::npos) << legend;
  // Every '&' is an entity, so the document parses as XML.
  for (size_t at = svg.find('&'); at != std::string::npos; at = svg.find('&', at + 1))
    EXPECT_TRUE(svg.compare(at, 5, "&amp;") == 0 || svg.compare(at, 4, "&lt;") == 0 || svg.compare(at, 4, "&gt;") == 0);
}

TEST(ChartTest, JsonCarriesEveryAction) {
  const Schedule s = make_schedule(ScheduleKind::kZB1P, 3, 4);
  const Costs c{.F = 2, .B = 2, .W = 1, .FB = 4, .p2p = 0.5};
  const Timeline tl = simulate(s, c);
  const std::string json = to_json(s, tl);
  size_t actions = 0;
  for (const auto& list : s.actions) actions += list.size();
  EXPECT_EQ(count(json, "\"op\":"), actions);
#ifdef TS_HAVE_NLOHMANN_JSON
  const nlohmann::json j = nlohmann::json::parse(json);
  EXPECT_EQ(j["kind"], "zb1p");
  EXPECT_EQ(j["total"].get<double>(), tl.total);
  ASSERT_EQ(j["actions"].size(), 3u);
  for (int r = 0; r < 3; ++r) {
    ASSERT_EQ(j["actions"][r].size(), s.actions[r].size());
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const auto& a = j["actions"][r][i];
      EXPECT_EQ(a["op"], std::string(op_kind_name(s.actions[r][i].op)));
      EXPECT_EQ(a["mb"], s.actions[r][i].unit.mb);
      EXPECT_EQ(a["start"].get<double>(), tl.spans[r][i].start);
      if (!s.actions[r][i].is_compute()) {
        EXPECT_EQ(a["peer"], s.actions[r][i].peer);
      }
    }
  }
#endif
}

TEST(ChartTest, RejectsATimelineOfAnotherSchedule) {
  const Schedule a = make_schedule(ScheduleKind::k1F1B, 2, 2);
  const Schedule b = make_schedule(ScheduleKind::k1F1B, 2, 3);
  const Timeline tb = simulate(b, Costs{});
  EXPECT_THROW(render_svg(a, tb), std::invalid_argument);
  EXPECT_THROW(render_text(a, tb), std::invalid_argument);
  EXPECT_THROW(to_json(a, tb), std::invalid_argument);
}

}  // namespace
}  // namespace ts::parallel
