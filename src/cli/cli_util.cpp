#include "cli_util.hpp"

#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <optional>

#include "io/safetensors_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/error.hpp"
#include "magix/hf_files.hpp"

namespace magix::cli {

namespace fs = std::filesystem;

void add_device_option(CLI::App& cmd, std::string& device) {
  cmd.add_option(flag("device"), device,
                 "where the model runs: cpu or cuda (default: cuda when this build of magix has "
                 "the CUDA backend and a GPU is visible, else cpu); under mpirun each rank takes "
                 "the GPU of its node-local rank (docs/kernels.md, Devices)");
}

std::string flag(const std::string& name) {
  std::string dashed = name;
  std::replace(dashed.begin(), dashed.end(), '_', '-');
  if (dashed == name) return "--" + name;
  return "--" + name + ",--" + dashed;
}

void write_output_file(const std::string& path, const std::string& text) {
  io::write_file_atomically(path, [&](int fd, const std::filesystem::path& tmp) {
    io::write_all(fd, text.data(), text.size(), tmp);
  });
}

namespace {

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId&) const = default;
};

std::optional<FileId> file_id(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return std::nullopt;  // follows symlinks
  return FileId{st.st_dev, st.st_ino};
}

// The canonical path of `p`'s parent folder + its name (the parts that exist resolved, symlinks
// and "." / ".." removed).
fs::path normal_path(const fs::path& p) {
  std::error_code ec;
  fs::path abs = fs::absolute(p, ec);
  if (ec) abs = p;
  fs::path out = fs::weakly_canonical(abs, ec);
  return ec ? abs.lexically_normal() : out;
}

// An input as the command will read it: a path, else a hub name resolved in the HF cache.
fs::path input_path(const std::string& given) {
  std::error_code ec;
  if (fs::exists(given, ec)) return given;
  try {
    return resolve_model_dir(given);
  } catch (const Error&) {
    return given;  // the command itself reports a missing input
  }
}

bool same_entry(const fs::path& a, const fs::path& b) {
  const std::optional<FileId> ia = file_id(a), ib = file_id(b);
  if (ia && ib) return *ia == *ib;
  return normal_path(a) == normal_path(b);
}

// `folder` itself or the folder of `inner`'s nearest ancestor that is `folder` (by identity),
// walking up the canonical path of `inner`.
bool is_inside(const fs::path& inner, const fs::path& folder) {
  const std::optional<FileId> target = file_id(folder);
  const fs::path folder_norm = normal_path(folder);
  for (fs::path p = normal_path(inner).parent_path(); !p.empty(); p = p.parent_path()) {
    if (target ? file_id(p) == target : p == folder_norm) return true;
    if (p == p.root_path()) break;
  }
  return false;
}

// The committed checkpoint step that `p` is or lies in, if any.
std::optional<fs::path> enclosing_step(const fs::path& p) {
  for (fs::path q = normal_path(p); !q.empty(); q = q.parent_path()) {
    if (is_checkpoint_step(q)) return q;
    if (q == q.root_path()) break;
  }
  return std::nullopt;
}

}  // namespace

void check_outputs_spare_inputs(const std::vector<CliPath>& inputs,
                                const std::vector<CliPath>& outputs) {
  for (const CliPath& out : outputs) {
    if (out.path.empty()) continue;
    if (const std::optional<fs::path> step = enclosing_step(out.path)) {
      MAGIX_FAIL("{} '{}' would write into the checkpoint step {}: choose a path outside it",
                 out.flag, out.path, step->string());
    }
    for (const CliPath& in : inputs) {
      if (in.path.empty()) continue;
      const fs::path src = input_path(in.path);
      MAGIX_CHECK(!same_entry(out.path, src),
                  "{} '{}' is the same file as {} '{}': refusing to overwrite an input", out.flag,
                  out.path, in.flag, in.path);
      std::error_code ec;
      if (fs::is_directory(src, ec)) {
        MAGIX_CHECK(!is_inside(out.path, src),
                    "{} '{}' lies inside {} '{}': refusing to write into an input folder", out.flag,
                    out.path, in.flag, in.path);
      }
    }
  }
}

}  // namespace magix::cli
