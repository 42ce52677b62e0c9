// render_svg, render_text, to_json.
#include "csrc/parallel/chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace ts::parallel {
namespace {

// Shortest decimal form with at most 3 decimals ("12", "12.5", "0.125").
std::string num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.3f", v);
  std::string s = buf;
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s == "-0" ? "0" : s;
}

void check_pair(const Schedule& s, const Timeline& tl, const char* who) {
  bool ok = static_cast<int>(tl.spans.size()) == s.ranks && static_cast<int>(s.actions.size()) == s.ranks;
  for (int r = 0; ok && r < s.ranks; ++r) ok = tl.spans[r].size() == s.actions[r].size();
  if (!ok) throw std::invalid_argument(std::string(who) + ": timeline does not come from this schedule");
}

std::string header(const Schedule& s, const Timeline& tl) {
  return std::string(schedule_kind_name(s.kind)) + ": " + std::to_string(s.ranks) + " ranks, " +
         std::to_string(s.stages) + " stages, " + std::to_string(s.microbatches) + " micro-batches; step time " +
         num(tl.total) + ", critical bubble " + num(tl.critical_bubble);
}

// ---------------------------------------------------------------- SVG

constexpr double kLeft = 64, kTop = 40, kRowH = 26, kRowGap = 6, kPlotW = 1200;

// Hue per micro-batch: a cool family for direction 0, a warm one for direction 1.
int hue(const Schedule& s, const Unit& u) {
  const int local = u.dir == 0 ? u.mb : u.mb - s.microbatches / 2;
  return u.dir == 0 ? 170 + (local * 53) % 120 : (350 + (local * 53) % 90) % 360;
}

std::string color(int h, int lightness) {
  return "hsl(" + std::to_string(h) + ",65%," + std::to_string(lightness) + "%)";
}

int lightness(OpKind op) {
  switch (op) {
    case OpKind::kF:
      return 80;
    case OpKind::kW:
      return 38;
    default:
      return 58;  // B, BW, and FB's backward half
  }
}

std::string rect(double x, double y, double w, double h, const std::string& fill, const std::string& extra = "") {
  return "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) + "\" fill=\"" +
         fill + "\"" + extra + "/>";
}

std::string xml_escape(const std::string& t) {
  std::string o;
  for (char c : t) {
    if (c == '&')
      o += "&amp;";
    else if (c == '<')
      o += "&lt;";
    else if (c == '>')
      o += "&gt;";
    else
      o += c;
  }
  return o;
}

std::string text(double x, double y, const std::string& t, const std::string& extra = "") {
  return "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" + extra + ">" + xml_escape(t) + "</text>";
}

// Tick spacing: 1, 2 or 5 times a power of ten, about ten ticks over `total`.
double tick_step(double total) {
  const double raw = total / 10, p = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0})
    if (m * p >= raw) return m * p;
  return 10 * p;
}

std::string svg_action(const Schedule& s, int r, const Action& a, const Span& sp, double px) {
  const double x = kLeft + sp.start * px, w = (sp.end - sp.start) * px;
  const double y = kTop + r * (kRowH + kRowGap);
  const Unit& u = a.unit;
  std::string label = std::string(op_kind_name(a.op)) + std::to_string(u.mb);
  std::string out = "<g class=\"op\" data-rank=\"" + std::to_string(r) + "\" data-op=\"" +
                    std::string(op_kind_name(a.op)) + "\" data-mb=\"" + std::to_string(u.mb) + "\" data-stage=\"" +
                    std::to_string(u.stage) + "\" data-dir=\"" + std::to_string(u.dir) + "\"";
  if (a.op == OpKind::kFB) out += " data-bwd-mb=\"" + std::to_string(a.bwd.mb) + "\"";
  out += ">";
  out += "<title>" + xml_escape(describe(a)) + " [" + num(sp.start) + ", " + num(sp.end) + ")</title>";
  const std::string thin = " stroke=\"#fff\" stroke-width=\"0.5\"";
  if (a.op == OpKind::kFB) {
    out += rect(x, y, w, kRowH / 2, color(hue(s, u), lightness(OpKind::kF)));
    out += rect(x, y + kRowH / 2, w, kRowH / 2, color(hue(s, a.bwd), lightness(OpKind::kBW)));
    out += rect(x, y, w, kRowH, "none", " stroke=\"#000\" stroke-width=\"1.5\"");
    label = std::to_string(u.mb) + "|" + std::to_string(a.bwd.mb);
  } else {
    out += rect(x, y, w, kRowH, color(hue(s, u), lightness(a.op)), thin);
    if (a.op == OpKind::kBW) out += rect(x, y, w, kRowH, "url(#hatch)");
  }
  if (w < 7.0 * label.size()) label = std::to_string(u.mb);
  if (w >= 7.0 * label.size())
    out += text(x + w / 2, y + kRowH / 2 + 4, label,
                std::string(" text-anchor=\"middle\" font-size=\"11\" fill=\"") +
                    (a.op == OpKind::kW ? "#fff" : "#000") + "\"");
  return out + "</g>\n";
}

}  // namespace

std::string render_svg(const Schedule& s, const Timeline& tl) {
  check_pair(s, tl, "render_svg");
  const double px = tl.total > 0 ? kPlotW / tl.total : 1;
  const double rows_h = s.ranks * (kRowH + kRowGap);
  const double width = kLeft + kPlotW + 20, height = kTop + rows_h + 100;
  std::string out = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + num(width) + "\" height=\"" + num(height) +
                    "\" font-family=\"sans-serif\">\n";
  out +=
      "<defs><pattern id=\"hatch\" width=\"6\" height=\"6\" patternUnits=\"userSpaceOnUse\" "
      "patternTransform=\"rotate(45)\"><line x1=\"0\" y1=\"0\" x2=\"0\" y2=\"6\" stroke=\"#000\" "
      "stroke-opacity=\"0.35\" stroke-width=\"2\"/></pattern></defs>\n";
  out += rect(0, 0, width, height, "#fff") + "\n";
  out += text(10, 24, header(s, tl), " font-size=\"14\"") + "\n";
  for (int r = 0; r < s.ranks; ++r) {
    const double y = kTop + r * (kRowH + kRowGap);
    out += text(10, y + kRowH / 2 + 4, "rank " + std::to_string(r), " font-size=\"12\"");
    out += rect(kLeft, y, kPlotW, kRowH, "#eee") + "\n";
    for (size_t i = 0; i < s.actions[r].size(); ++i)
      if (s.actions[r][i].is_compute()) out += svg_action(s, r, s.actions[r][i], tl.spans[r][i], px);
  }
  const double axis_y = kTop + rows_h;
  if (tl.total > 0) {
    const double step = tick_step(tl.total);
    for (double t = 0; t <= tl.total + 1e-9 * tl.total; t += step) {
      const double x = kLeft + t * px;
      out += "<line x1=\"" + num(x) + "\" y1=\"" + num(axis_y) + "\" x2=\"" + num(x) + "\" y2=\"" + num(axis_y + 5) +
             "\" stroke=\"#000\"/>";
      out += text(x, axis_y + 17, num(t), " text-anchor=\"middle\" font-size=\"10\"") + "\n";
    }
  }
  // Legend: passes in direction 0's first hue, then the directions.
  const Unit u0 = s.unit(0, 0);
  const int h0 = hue(s, u0);
  double lx = kLeft, ly = axis_y + 34;
  auto swatch = [&](const std::string& body, const std::string& name) {
    out += body + text(lx + 26, ly + 12, name, " font-size=\"12\"") + "\n";
    lx += 34 + 7.0 * name.size();
  };
  swatch(rect(lx, ly, 20, 16, color(h0, lightness(OpKind::kF))), "F forward");
  swatch(rect(lx, ly, 20, 16, color(h0, lightness(OpKind::kB))), "B backward for inputs");
  swatch(rect(lx, ly, 20, 16, color(h0, lightness(OpKind::kW))), "W backward for weights");
  swatch(rect(lx, ly, 20, 16, color(h0, lightness(OpKind::kBW))) + rect(lx, ly, 20, 16, "url(#hatch)"),
         "BW full backward");
  swatch(rect(lx, ly, 20, 8, color(h0, lightness(OpKind::kF))) +
             rect(lx, ly + 8, 20, 8, color(h0, lightness(OpKind::kBW))) +
             rect(lx, ly, 20, 16, "none", " stroke=\"#000\" stroke-width=\"1.5\""),
         "F&B overlapped (top F, bottom full B)");
  lx = kLeft;
  ly += 26;
  if (s.kind == ScheduleKind::kDualPipe) {
    const int half = s.microbatches / 2;
    swatch(rect(lx, ly, 20, 16, color(h0, 58)), "micro-batches 0-" + std::to_string(half - 1) + " enter at rank 0");
    swatch(rect(lx, ly, 20, 16, color(hue(s, s.unit(half, 0)), 58)),
           "micro-batches " + std::to_string(half) + "-" + std::to_string(s.microbatches - 1) + " enter at rank " +
               std::to_string(s.ranks - 1));
  } else {
    out += text(lx, ly + 12, "colour = micro-batch; all enter at rank 0; label = micro-batch id", " font-size=\"12\"") +
           "\n";
  }
  return out + "</svg>\n";
}

// ---------------------------------------------------------------- text

std::string render_text(const Schedule& s, const Timeline& tl) { return render_text(s, tl, TextOptions{}); }

std::string render_text(const Schedule& s, const Timeline& tl, const TextOptions& opt) {
  check_pair(s, tl, "render_text");
  double scale = opt.cells_per_time;
  if (scale <= 0) {
    double shortest = 0;
    for (int r = 0; r < s.ranks; ++r)
      for (const Span& sp : tl.spans[r])
        if (sp.end > sp.start && (shortest == 0 || sp.end - sp.start < shortest)) shortest = sp.end - sp.start;
    scale = shortest > 0 ? 4 / shortest : 1;
    if (tl.total * scale > opt.max_width) scale = opt.max_width / tl.total;
  }
  const size_t width = static_cast<size_t>(std::lround(tl.total * scale));
  std::string out = header(s, tl) + "; 1 cell = " + num(1 / scale) + " time units\n";
  out +=
      "F<m> forward, B<m> backward for inputs, W<m> weights, BW<m> full backward, F<m>|B<n> overlapped, . "
      "idle";
  if (s.kind == ScheduleKind::kDualPipe)
    out += "; micro-batches " + std::to_string(s.microbatches / 2) + "+ enter at rank " + std::to_string(s.ranks - 1);
  out += "\n";
  for (int r = 0; r < s.ranks; ++r) {
    std::string row(width, '.');
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      const Span& sp = tl.spans[r][i];
      if (!a.is_compute()) continue;
      const size_t c0 = std::min(width, static_cast<size_t>(std::lround(sp.start * scale)));
      size_t c1 = std::min(width, static_cast<size_t>(std::lround(sp.end * scale)));
      if (c1 == c0 && c0 < width) c1 = c0 + 1;  // keep very short actions visible
      std::string label = std::string(op_kind_name(a.op)) + std::to_string(a.unit.mb);
      if (a.op == OpKind::kFB)
        label = std::string("F").append(std::to_string(a.unit.mb)).append("|B").append(std::to_string(a.bwd.mb));
      // A cut label would name the wrong micro-batch ("W1" for W12): fall back to the op.
      if (label.size() > c1 - c0) label = op_kind_name(a.op);
      for (size_t c = c0; c < c1; ++c) row[c] = c - c0 < label.size() ? label[c - c0] : '-';
    }
    std::string name = std::string("r").append(std::to_string(r));
    name.resize(std::max<size_t>(name.size(), 4), ' ');
    out += name + "|" + row + "| busy " + num(tl.busy[r]) + " bubble " + num(tl.bubble[r]) + " peak " +
           std::to_string(tl.peak_activations[r]) + "\n";
  }
  return out;
}

// ---------------------------------------------------------------- JSON

std::string to_json(const Schedule& s, const Timeline& tl) {
  check_pair(s, tl, "to_json");
  auto list = [](const auto& v) {
    std::string o = "[";
    for (size_t i = 0; i < v.size(); ++i) o.append(i ? "," : "").append(num(static_cast<double>(v[i])));
    return o + "]";
  };
  auto unit = [](const char* prefix, const Unit& u) {
    const std::string p = prefix;
    return ",\"" + p + "mb\":" + std::to_string(u.mb) + ",\"" + p + "stage\":" + std::to_string(u.stage) + ",\"" + p +
           "dir\":" + std::to_string(u.dir);
  };
  std::string out =
      "{\"kind\":\"" + std::string(schedule_kind_name(s.kind)) + "\",\"ranks\":" + std::to_string(s.ranks) +
      ",\"stages\":" + std::to_string(s.stages) + ",\"microbatches\":" + std::to_string(s.microbatches) +
      ",\"total\":" + num(tl.total) + ",\"critical_bubble\":" + num(tl.critical_bubble) + ",\"busy\":" + list(tl.busy) +
      ",\"bubble\":" + list(tl.bubble) + ",\"peak_activations\":" + list(tl.peak_activations) + ",\"actions\":[";
  for (int r = 0; r < s.ranks; ++r) {
    out += r ? ",\n[" : "\n[";
    for (size_t i = 0; i < s.actions[r].size(); ++i) {
      const Action& a = s.actions[r][i];
      out.append(i ? ",{\"op\":\"" : "{\"op\":\"").append(op_kind_name(a.op)).append("\"").append(unit("", a.unit));
      if (a.op == OpKind::kFB) out += unit("bwd_", a.bwd);
      if (!a.is_compute())
        out += ",\"peer\":" + std::to_string(a.peer) + ",\"payload\":\"" +
               (a.payload == Payload::kActivation ? "activation" : "gradient") + "\"";
      out += ",\"start\":" + num(tl.spans[r][i].start) + ",\"end\":" + num(tl.spans[r][i].end) + "}";
    }
    out += "]";
  }
  return out + "]}\n";
}

}  // namespace ts::parallel
