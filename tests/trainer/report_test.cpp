// What training reports besides its log: TensorBoard event files (CRC-32C, TFRecord framing,
// tf.Event encoding) and the loss-curve SVG (metrics parsing, drawing).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <string>

#include "magix/error.hpp"
#include "magix/plot.hpp"
#include "train/tensorboard.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

uint64_t le(std::string_view s, size_t at, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = v << 8 | static_cast<unsigned char>(s[at + i]);
  return v;
}

uint32_t unmask(uint32_t m) {
  const uint32_t r = m - 0xa282ead8u;
  return (r >> 17) | (r << 15);
}

TEST(TensorBoard, Crc32cKnownValues) {
  // The check value of CRC-32C (RFC 3720 B.4 and the usual "123456789" check).
  EXPECT_EQ(detail::crc32c("123456789"), 0xE3069283u);
  EXPECT_EQ(detail::crc32c(""), 0u);
  EXPECT_EQ(detail::crc32c(std::string(32, '\0')), 0x8A9136AAu);
  EXPECT_EQ(detail::crc32c(std::string(32, '\xff')), 0x62A8AB43u);
}

TEST(TensorBoard, RecordFraming) {
  const std::string data = "hello event";
  const std::string rec = detail::tfrecord(data);
  ASSERT_EQ(rec.size(), 8 + 4 + data.size() + 4);
  EXPECT_EQ(le(rec, 0, 8), data.size());
  EXPECT_EQ(unmask(static_cast<uint32_t>(le(rec, 8, 4))), detail::crc32c(rec.substr(0, 8)));
  EXPECT_EQ(rec.substr(12, data.size()), data);
  EXPECT_EQ(unmask(static_cast<uint32_t>(le(rec, 12 + data.size(), 4))), detail::crc32c(data));
}

TEST(TensorBoard, EventEncoding) {
  // wall_time 1.5 (field 1, fixed64), step 7 (field 2, varint), summary (field 5) with one value:
  // tag "a" (field 1), simple_value 2.0f (field 2, fixed32).
  const std::string e = detail::event_scalars(1.5, 7, {{"a", 2.0f}});
  const std::string want(
      "\x09\x00\x00\x00\x00\x00\x00\xf8\x3f\x10\x07\x2a\x0a\x0a\x08\x0a\x01"
      "a\x15\x00\x00\x00\x40",
      23);
  EXPECT_EQ(e, want);
  const std::string v = detail::event_file_version(0.0);
  EXPECT_NE(v.find("brain.Event:2"), std::string::npos);
  // SessionLog START (field 6, status 1) at step 300 (varint 0xac 0x02).
  const std::string s = detail::event_session_start(0.0, 300);
  EXPECT_EQ(s.substr(9), std::string("\x10\xac\x02\x32\x02\x08\x01", 7));
}

TEST(TensorBoard, WriterMakesAFileOfRecords) {
  const fs::path dir = fs::temp_directory_path() / ("magix_tb_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::path path;
  {
    detail::TensorBoardWriter w(dir / "runs", 12);
    w.scalars(13, {{"train/loss", 1.25f}});
    path = w.path();
  }
  EXPECT_TRUE(path.filename().string().starts_with("events.out.tfevents."));
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), {});
  // Three records (file version, session start, scalars), each framed and checksummed.
  size_t at = 0;
  int records = 0;
  while (at < bytes.size()) {
    ASSERT_LE(at + 12, bytes.size());
    const uint64_t n = le(bytes, at, 8);
    ASSERT_LE(at + 16 + n, bytes.size());
    EXPECT_EQ(unmask(static_cast<uint32_t>(le(bytes, at + 12 + n, 4))),
              detail::crc32c(std::string_view(bytes).substr(at + 12, n)));
    at += 16 + n;
    ++records;
  }
  EXPECT_EQ(records, 3);
  fs::remove_all(dir);
}

class PlotTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("magix_plot_" + std::to_string(getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path write(const std::string& name, const std::string& text) {
    std::ofstream(dir_ / name) << text;
    return dir_ / name;
  }
  fs::path dir_;
};

TEST_F(PlotTest, ReadsStepsEvalAndSkipsNonFinite) {
  const fs::path m = write("m.jsonl",
                           "{\"step\":1,\"loss\":3.0,\"lr\":0.1}\n"
                           "{\"step\":2,\"loss\":null,\"lr\":0.2}\n"
                           "{\"step\":2,\"eval_loss\":2.5}\n"
                           "{\"step\":3,\"loss\":2.0,\"lr\":0.3}\n"
                           "{\"step\":4,\"lo");  // torn last line
  const MetricsSeries s = read_metrics_file(m);
  EXPECT_EQ(s.step, (std::vector<double>{1, 3}));
  EXPECT_EQ(s.loss, (std::vector<double>{3.0, 2.0}));
  EXPECT_EQ(s.lr, (std::vector<double>{0.1, 0.2, 0.3}));
  EXPECT_EQ(s.eval_step, (std::vector<double>{2}));
  EXPECT_EQ(s.eval_loss, (std::vector<double>{2.5}));
  EXPECT_EQ(s.skipped, 1);
}

TEST_F(PlotTest, BadFilesAreErrorsNamingTheLine) {
  const fs::path bad = write("bad.jsonl", "{\"step\":1,\"loss\":1}\nnot json\n{\"step\":2}\n");
  try {
    read_metrics_file(bad);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("bad.jsonl:2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(read_metrics_file(write("empty.jsonl", "")), Error);
  EXPECT_THROW(read_metrics_file(dir_ / "absent.jsonl"), Error);
}

TEST_F(PlotTest, SvgHasBothPanelsTicksAndTheFigures) {
  std::string text;
  for (int i = 1; i <= 200; ++i) {
    text += "{\"step\":" + std::to_string(i) + ",\"loss\":" + std::to_string(5.0 / i + 1.0) +
            ",\"lr\":" + std::to_string(i < 20 ? i * 0.001 : 0.02) + "}\n";
    if (i % 50 == 0) text += "{\"step\":" + std::to_string(i) + ",\"eval_loss\":1.5}\n";
  }
  const std::string svg =
      loss_curve_svg(read_metrics_file(write("run.jsonl", text)), "loss of <run> & co");
  EXPECT_TRUE(svg.starts_with("<?xml")) << svg.substr(0, 40);
  EXPECT_TRUE(svg.ends_with("</svg>\n"));
  EXPECT_NE(svg.find("loss of &lt;run&gt; &amp; co"), std::string::npos);  // escaped title
  // raw loss, trend, eval and lr lines; four eval markers.
  for (const char* cls : {"class=\"raw\"", "class=\"trend\"", "class=\"eval\"", "class=\"lr\""}) {
    EXPECT_NE(svg.find(std::string("<polyline ") + cls), std::string::npos) << cls;
  }
  const std::regex dot("class=\"evaldot\"");
  EXPECT_EQ(
      std::distance(std::sregex_iterator(svg.begin(), svg.end(), dot), std::sregex_iterator()), 4);
  EXPECT_NE(svg.find(">learning rate<"), std::string::npos);
  EXPECT_NE(svg.find(">200<"), std::string::npos);  // the last step is a tick on the x axis
  // The stated figures: first loss 6.0 at step 1, mean of the last 4 steps at step 200.
  double last4 = 0;
  for (int i = 197; i <= 200; ++i) last4 += 5.0 / i + 1.0;
  char want[128];
  std::snprintf(want, sizeof want, "train loss 6.0000 at step 1 -&gt; %.4f (mean of the last 4)",
                last4 / 4);
  EXPECT_NE(svg.find(want), std::string::npos) << want;
  // Every coordinate lies inside the picture.
  const std::regex pt("([0-9.]+),([0-9.]+)");
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), pt); it != std::sregex_iterator();
       ++it) {
    const double x = std::stod((*it)[1]), y = std::stod((*it)[2]);
    EXPECT_TRUE(x >= 0 && x <= 860 && y >= 0 && y <= 600) << (*it)[0];
  }
}

TEST(Plot, DefaultPathSitsNextToTheMetrics) {
  EXPECT_EQ(default_plot_path("run/metrics.jsonl"), fs::path("run/metrics.svg"));
  EXPECT_EQ(default_plot_path("run/metrics"), fs::path("run/metrics.svg"));
  EXPECT_EQ(default_plot_path("odd.svg"), fs::path("odd.svg.svg"));
}

}  // namespace
}  // namespace magix
