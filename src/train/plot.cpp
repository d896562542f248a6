// Loss curves as SVG (include/magix/plot.hpp).
#include "magix/plot.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>

#include "io/safetensors_util.hpp"
#include "magix/error.hpp"

namespace magix {

namespace fs = std::filesystem;

namespace {

constexpr int64_t kMaxLineBytes = 1 << 20;  // a metrics line is ~200 bytes

std::string xml_escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '&':
        out += "&amp;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        // Control bytes are not allowed in XML 1.0.
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t') out += c;
    }
  }
  return out;
}

// Tick positions covering [lo, hi]: steps of 1, 2 or 5 x 10^k, about `target` of them.
std::vector<double> nice_ticks(double lo, double hi, int target) {
  const double span = hi - lo;
  const double raw = span / std::max(1, target);
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * mag;
    if (step >= raw) break;
  }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) {
    ticks.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  }
  return ticks;
}

std::string tick_label(double v) {
  if (v == 0) return "0";
  const double a = std::abs(v);
  if (a >= 1e5 || a < 1e-3) return fmt::format("{:.1e}", v);
  if (a >= 100 || v == std::round(v)) return fmt::format("{:.0f}", v);
  std::string s = fmt::format("{:.4f}", v);
  while (s.back() == '0') s.pop_back();
  if (s.back() == '.') s.pop_back();
  return s;
}

// Moving average over a centred window of `w` points (shrinking at the ends).
std::vector<double> smooth(const std::vector<double>& y, int64_t w) {
  const int64_t n = std::ssize(y), h = w / 2;
  std::vector<double> prefix(static_cast<size_t>(n) + 1, 0.0), out(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) prefix[i + 1] = prefix[i] + y[i];
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = std::max<int64_t>(0, i - h), b = std::min(n, i + h + 1);
    out[i] = (prefix[b] - prefix[a]) / static_cast<double>(b - a);
  }
  return out;
}

struct Range {
  double lo = 0, hi = 1;
};

Range range_of(std::initializer_list<const std::vector<double>*> vs) {
  double lo = INFINITY, hi = -INFINITY;
  for (const auto* v : vs) {
    for (double x : *v) {
      lo = std::min(lo, x);
      hi = std::max(hi, x);
    }
  }
  if (!std::isfinite(lo)) return {0, 1};
  if (hi - lo < 1e-12 * std::max(1.0, std::abs(hi))) {
    const double pad = std::max(std::abs(hi) * 0.05, 1e-6);
    return {lo - pad, hi + pad};
  }
  return {lo, hi};
}

// One panel: a plot area at (x0, y0) of size (w, h) with the data ranges mapped onto it.
struct Panel {
  double x0, y0, w, h;
  Range xr, yr;
  double px(double x) const { return x0 + (x - xr.lo) / (xr.hi - xr.lo) * w; }
  double py(double y) const { return y0 + h - (y - yr.lo) / (yr.hi - yr.lo) * h; }

  // Axes, grid lines, tick labels and the axis titles.
  void frame(std::string& svg, const std::string& ylabel, const std::string& xlabel) const {
    for (double t : nice_ticks(yr.lo, yr.hi, 5)) {
      if (t < yr.lo || t > yr.hi) continue;
      svg += fmt::format(
          "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" class=\"grid\"/>\n"
          "<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"tick\" text-anchor=\"end\">{}</text>\n",
          x0, py(t), x0 + w, py(t), x0 - 6, py(t) + 4, tick_label(t));
    }
    for (double t : nice_ticks(xr.lo, xr.hi, 8)) {
      if (t < xr.lo || t > xr.hi) continue;
      svg += fmt::format(
          "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" class=\"grid\"/>\n"
          "<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"tick\" text-anchor=\"middle\">{}</text>\n",
          px(t), y0, px(t), y0 + h, px(t), y0 + h + 16, tick_label(t));
    }
    svg += fmt::format(
        "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"{:.1f}\" height=\"{:.1f}\" class=\"frame\"/>\n",
        x0, y0, w, h);
    svg += fmt::format(
        "<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"label\" text-anchor=\"middle\" "
        "transform=\"rotate(-90 {:.1f} {:.1f})\">{}</text>\n",
        x0 - 52, y0 + h / 2, x0 - 52, y0 + h / 2, xml_escape(ylabel));
    if (!xlabel.empty()) {
      svg += fmt::format(
          "<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"label\" "
          "text-anchor=\"middle\">{}</text>\n",
          x0 + w / 2, y0 + h + 34, xml_escape(xlabel));
    }
  }

  // A polyline through the points (at most ~4000 of them: longer runs are thinned evenly).
  void line(std::string& svg, const std::vector<double>& x, const std::vector<double>& y,
            const std::string& cls) const {
    if (x.empty()) return;
    const size_t stride = std::max<size_t>(1, x.size() / 4000);
    svg += "<polyline class=\"" + cls + "\" points=\"";
    for (size_t i = 0; i < x.size(); i += stride) {
      svg += fmt::format("{:.1f},{:.1f} ", px(x[i]), py(y[i]));
    }
    if ((x.size() - 1) % stride != 0) {
      svg += fmt::format("{:.1f},{:.1f}", px(x.back()), py(y.back()));
    }
    svg += "\"/>\n";
  }

  void dots(std::string& svg, const std::vector<double>& x, const std::vector<double>& y,
            const std::string& cls) const {
    for (size_t i = 0; i < x.size(); ++i) {
      svg += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"3.5\" class=\"{}\"/>\n", px(x[i]),
                         py(y[i]), cls);
    }
  }
};

}  // namespace

MetricsSeries read_metrics_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  MAGIX_CHECK(in.good(), "cannot read the metrics file '{}'", path.string());
  MetricsSeries s;
  std::string line;
  int64_t lineno = 0;
  auto number = [](const nlohmann::json& j, const char* key, double* out) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_number()) return false;
    *out = it->get<double>();
    return true;
  };
  while (std::getline(in, line)) {
    ++lineno;
    MAGIX_CHECK(std::ssize(line) <= kMaxLineBytes, "{}:{}: a line of more than {} bytes",
                path.string(), lineno, kMaxLineBytes);
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() && in.peek() == std::char_traits<char>::eof()) break;  // torn last line
    MAGIX_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer(),
                "{}:{}: not a metrics line (a JSON object with an integer \"step\")", path.string(),
                lineno);
    const double step = j["step"].get<double>();
    double v = 0;
    if (j.contains("loss")) {
      if (number(j, "loss", &v) && std::isfinite(v)) {
        s.step.push_back(step);
        s.loss.push_back(v);
      } else {
        ++s.skipped;
      }
    }
    if (number(j, "lr", &v) && std::isfinite(v)) {
      s.lr_step.push_back(step);
      s.lr.push_back(v);
    }
    if (number(j, "eval_loss", &v) && std::isfinite(v)) {
      s.eval_step.push_back(step);
      s.eval_loss.push_back(v);
    }
  }
  MAGIX_CHECK(!s.step.empty() || !s.eval_step.empty(),
              "the metrics file '{}' holds no finite loss to plot", path.string());
  return s;
}

std::string loss_curve_svg(const MetricsSeries& s, const std::string& title) {
  constexpr double kWidth = 860, kHeight = 600;
  const bool has_lr = !s.lr.empty();
  Range xr = range_of({&s.step, &s.eval_step, &s.lr_step});
  if (xr.hi - xr.lo < 1) xr = {xr.lo - 0.5, xr.hi + 0.5};
  const std::vector<double> trend = smooth(s.loss, std::max<int64_t>(1, std::ssize(s.loss) / 50));
  Range yr = range_of({&s.loss, &s.eval_loss});
  const double pad = (yr.hi - yr.lo) * 0.05;
  yr = {yr.lo >= 0 ? std::max(0.0, yr.lo - pad) : yr.lo - pad, yr.hi + pad};
  Panel loss{80, 60, kWidth - 110, has_lr ? 330.0 : 470.0, xr, yr};
  std::string svg = fmt::format(
      "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
      "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"{0}\" height=\"{1}\" "
      "viewBox=\"0 0 {0} {1}\">\n"
      "<style>\n"
      "text {{ font-family: DejaVu Sans, Helvetica, Arial, sans-serif; fill: #222; }}\n"
      ".title {{ font-size: 17px; font-weight: bold; }}\n"
      ".label {{ font-size: 13px; }}\n"
      ".tick {{ font-size: 11px; fill: #444; }}\n"
      ".note {{ font-size: 11px; fill: #666; }}\n"
      ".grid {{ stroke: #e4e4e4; stroke-width: 1; }}\n"
      ".frame {{ fill: none; stroke: #888; stroke-width: 1; }}\n"
      ".raw {{ fill: none; stroke: #9ec5e8; stroke-width: 1; }}\n"
      ".trend {{ fill: none; stroke: #1f5fa8; stroke-width: 2.2; }}\n"
      ".eval {{ fill: none; stroke: #e07b00; stroke-width: 2; }}\n"
      ".evaldot {{ fill: #e07b00; }}\n"
      ".lr {{ fill: none; stroke: #2a9d4a; stroke-width: 1.8; }}\n"
      "</style>\n"
      "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
      "<text x=\"{2}\" y=\"30\" class=\"title\" text-anchor=\"middle\">{3}</text>\n",
      kWidth, kHeight, kWidth / 2, xml_escape(title));
  loss.frame(svg, "loss", has_lr ? "" : "step");
  loss.line(svg, s.step, s.loss, "raw");
  loss.line(svg, s.step, trend, "trend");
  loss.line(svg, s.eval_step, s.eval_loss, "eval");
  loss.dots(svg, s.eval_step, s.eval_loss, "evaldot");

  // Legend, top right inside the loss panel.
  struct Entry {
    std::string cls, text;
  };
  std::vector<Entry> legend;
  if (!s.loss.empty()) {
    legend.push_back({"raw", "train loss (each step)"});
    legend.push_back({"trend", fmt::format("train loss, mean of {} steps",
                                           std::max<int64_t>(1, std::ssize(s.loss) / 50))});
  }
  if (!s.eval_loss.empty()) legend.push_back({"eval", "eval loss"});
  double ly = loss.y0 + 18;
  const double lx = loss.x0 + loss.w - 250;
  svg += fmt::format(
      "<rect x=\"{:.1f}\" y=\"{:.1f}\" width=\"240\" height=\"{:.1f}\" "
      "fill=\"white\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>\n",
      lx - 8, loss.y0 + 6, 20.0 * static_cast<double>(legend.size()) + 6);
  for (const Entry& e : legend) {
    svg += fmt::format(
        "<line x1=\"{:.1f}\" y1=\"{:.1f}\" x2=\"{:.1f}\" y2=\"{:.1f}\" class=\"{}\"/>\n"
        "<text x=\"{:.1f}\" y=\"{:.1f}\" class=\"label\">{}</text>\n",
        lx, ly - 4, lx + 26, ly - 4, e.cls, lx + 34, ly, xml_escape(e.text));
    ly += 20;
  }
  // The last values, stated: what a reader looks for first.
  std::string summary;
  if (!s.loss.empty()) {
    const int64_t w = std::max<int64_t>(1, std::ssize(s.loss) / 50);
    double last = 0;
    for (int64_t i = std::ssize(s.loss) - w; i < std::ssize(s.loss); ++i) last += s.loss[i];
    summary = fmt::format(
        "{} steps; train loss {:.4f} at step {:.0f} -> {:.4f} (mean of the last {}) at step "
        "{:.0f}",
        s.loss.size(), s.loss.front(), s.step.front(), last / static_cast<double>(w), w,
        s.step.back());
  }
  if (!s.eval_loss.empty()) {
    summary += fmt::format("{}eval loss {:.4f} at step {:.0f}", summary.empty() ? "" : "; ",
                           s.eval_loss.back(), s.eval_step.back());
  }
  if (s.skipped > 0) summary += fmt::format("; {} non-finite steps not drawn", s.skipped);
  svg +=
      fmt::format("<text x=\"{:.1f}\" y=\"48\" class=\"note\" text-anchor=\"middle\">{}</text>\n",
                  kWidth / 2, xml_escape(summary));

  if (has_lr) {
    Range lr_r = range_of({&s.lr});
    lr_r.lo = std::min(0.0, lr_r.lo);
    lr_r.hi *= 1.08;
    Panel lr{80, loss.y0 + loss.h + 40, loss.w, 130, xr, lr_r};
    lr.frame(svg, "learning rate", "step");
    lr.line(svg, s.lr_step, s.lr, "lr");
  }
  svg += "</svg>\n";
  return svg;
}

void write_loss_plot(const fs::path& metrics, const fs::path& svg) {
  const std::string text =
      loss_curve_svg(read_metrics_file(metrics), "training loss: " + metrics.filename().string());
  io::write_file_atomically(
      svg, [&](int fd, const fs::path& tmp) { io::write_all(fd, text.data(), text.size(), tmp); });
}

fs::path default_plot_path(const fs::path& metrics) {
  fs::path p = metrics;
  p.replace_extension(".svg");
  if (p == metrics) p += ".svg";  // a metrics file named *.svg keeps its own name
  return p;
}

}  // namespace magix
