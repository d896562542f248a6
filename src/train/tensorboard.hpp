// TensorBoard event files (--report_to tensorboard): scalars per step in the TFRecord framing of
// tf.Event protocol buffers, which TensorBoard's reader loads. The few message fields written
// are encoded here; the framing's CRC-32C is computed here too (docs/training.md).
#pragma once

#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace magix::detail {

// CRC-32C (Castagnoli), as TFRecord frames use it (before masking).
uint32_t crc32c(std::string_view data);

// One TFRecord: length (u64 LE), masked CRC of the length, data, masked CRC of the data.
std::string tfrecord(std::string_view data);

// Serialized tf.Event messages.
std::string event_file_version(double wall_time);  // the first event of every file
std::string event_scalars(double wall_time, int64_t step,
                          const std::vector<std::pair<std::string, float>>& scalars);
// SessionLog START at `step`: TensorBoard drops what an earlier (crashed) run of the same folder
// logged at steps >= `step`, so that a resumed run draws one clean curve.
std::string event_session_start(double wall_time, int64_t step);

class TensorBoardWriter {
 public:
  // Creates `dir` and a new file events.out.tfevents.<seconds>.<host>.<pid>.0 in it; `start_step`
  // > 0 (a resume) writes a SessionLog START there.
  TensorBoardWriter(const std::filesystem::path& dir, int64_t start_step);
  ~TensorBoardWriter();
  TensorBoardWriter(const TensorBoardWriter&) = delete;
  TensorBoardWriter& operator=(const TensorBoardWriter&) = delete;

  void scalars(int64_t step, const std::vector<std::pair<std::string, float>>& values);
  const std::filesystem::path& path() const { return path_; }

 private:
  void write(const std::string& event);

  std::filesystem::path path_;
  std::FILE* file_ = nullptr;
};

}  // namespace magix::detail
