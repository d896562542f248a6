// Files from outside are read with a size bound (read_text_file_bounded): a file over it is
// refused before it is read (even a sparse one), a pipe that streams past it is cut off, and the
// readers of hub files (config.json, tokenizer.json, tokenizer_config.json, chat_template.jinja)
// state their bound in the message.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <thread>

#include "../common/error_of.hpp"
#include "magix/error.hpp"
#include "magix/json_parse.hpp"
#include "magix/model_config.hpp"
#include "magix/tokenizer.hpp"
#include "magix/tokenizer_config.hpp"

namespace magix {
namespace {

namespace fs = std::filesystem;

using test::error_of;

class BoundedRead : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / fmt::format("magix_bounded_{}", ::getpid());
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  // A file of `size` bytes that takes no disk space (a hole), starting with `head`.
  fs::path sparse(const std::string& name, int64_t size, const std::string& head = "") {
    const fs::path p = dir_ / name;
    { std::ofstream(p, std::ios::binary) << head; }
    fs::resize_file(p, static_cast<uintmax_t>(size));
    return p;
  }
  fs::path dir_;
};

TEST_F(BoundedRead, ReadsAFileUpToTheBoundWhole) {
  std::string text(100000, 'x');
  text[12345] = 'y';
  { std::ofstream(dir_ / "a.txt", std::ios::binary) << text; }
  EXPECT_EQ(read_text_file_bounded(dir_ / "a.txt", 100000, "test file"), text);
  EXPECT_EQ(error_of([&] { read_text_file_bounded(dir_ / "a.txt", 99999, "test file"); }),
            fmt::format("test file '{}' is 100000 bytes, more than the 99999 a real one needs",
                        (dir_ / "a.txt").string()));
  EXPECT_EQ(error_of([&] { read_text_file_bounded(dir_ / "none", 10, "test file"); }),
            fmt::format("cannot open test file '{}'", (dir_ / "none").string()));
}

TEST_F(BoundedRead, APipeIsCutOffAtTheBound) {
  const fs::path fifo = dir_ / "fifo";
  ASSERT_EQ(::mkfifo(fifo.c_str(), 0600), 0);
  // The writer's writes after the reader closes fail with EPIPE instead of killing the process.
  struct sigaction ignore = {}, saved = {};
  ignore.sa_handler = SIG_IGN;
  ASSERT_EQ(::sigaction(SIGPIPE, &ignore, &saved), 0);
  // The writer streams 1 MiB; the reader must stop after 64 KiB + 1 and say why.
  std::thread writer([&] {
    const int fd = ::open(fifo.c_str(), O_WRONLY);
    if (fd < 0) return;
    const std::string block(4096, 'z');
    for (int i = 0; i < 256; ++i)
      if (::write(fd, block.data(), block.size()) < 0) break;  // EPIPE once the reader is gone
    ::close(fd);
  });
  const std::string err = error_of([&] { read_text_file_bounded(fifo, 65536, "piped file"); });
  writer.join();
  ::sigaction(SIGPIPE, &saved, nullptr);
  EXPECT_EQ(err, fmt::format("piped file '{}' holds more than the 65536 bytes a real one needs",
                             fifo.string()));
}

TEST_F(BoundedRead, HubFilesStateTheirBounds) {
  const fs::path config = sparse("config.json", 5 << 20, R"({"model_type": "llama"})");
  EXPECT_EQ(error_of([&] { load_model_config(config); }),
            fmt::format("model config '{}' is {} bytes, more than the {} a real one needs",
                        config.string(), 5 << 20, 4 << 20));

  const fs::path tok = sparse("tokenizer.json", kMaxTokenizerJsonBytes + 1, "{");
  EXPECT_EQ(error_of([&] { Tokenizer::from_file(tok); }),
            fmt::format("tokenizer file '{}' is {} bytes, more than the {} a real one needs",
                        tok.string(), kMaxTokenizerJsonBytes + 1, kMaxTokenizerJsonBytes));

  const fs::path tc = sparse("tokenizer_config.json", (64 << 20) + 1, "{");
  EXPECT_NE(error_of([&] {
              load_tokenizer_config(dir_);
            }).find(fmt::format("tokenizer config '{}' is {} bytes", tc.string(), (64 << 20) + 1)),
            std::string::npos);
  fs::remove(tc);

  const fs::path jinja = sparse("chat_template.jinja", (4 << 20) + 1, "{{ messages }}");
  EXPECT_NE(error_of([&] {
              load_tokenizer_config(dir_);
            }).find(fmt::format("chat template '{}' is {} bytes", jinja.string(), (4 << 20) + 1)),
            std::string::npos);
  fs::remove(jinja);
  // Within the bounds both read as before.
  { std::ofstream(dir_ / "chat_template.jinja") << "{{ messages }}"; }
  EXPECT_EQ(load_tokenizer_config(dir_).chat_templates.at("default"), "{{ messages }}");
}

}  // namespace
}  // namespace magix
