// Checkpoints across meshes, run under mpirun as every rank (checkpoint_mesh.sh):
//   (save and restore take an optional fixture MODEL name; default llama_gqa)
//   checkpoint_mesh_probe save DIR D M      fixture model params + optimizer-like tensors (f32
//                                           and bf16 moments, a replicated scalar) saved async
//                                           on a D x M mesh as step 1
//   checkpoint_mesh_probe restore DIR D M   every rank's boxes read back on a D x M mesh equal
//                                           the global tensors bitwise
//   checkpoint_mesh_probe once DIR          on 2x1: FSDP (data-sharded) and replicated tensors;
//                                           index.json's boxes tile each tensor exactly once
//                                           and the rank files hold each element once
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "../checkpoint/checkpoint_test_util.hpp"
#include "magix/checkpoint.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"

namespace {

namespace fs = std::filesystem;
using magix::DType;
using magix::Shape;
using magix::ShardedTensor;

int failures = 0;

void expect(bool ok, const std::string& what, int rank) {
  if (!ok) {
    std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
    ++failures;
  }
}

const fs::path kModels = fs::path(MAGIX_FIXTURES_DIR) / "models";
fs::path model_dir = kModels / "llama_gqa";  // the optional MODEL argument

// Optimizer-like state with the parameters' layout: mu (f32), nu (bf16), seeded per tensor, and
// a replicated scalar count.
std::vector<ShardedTensor> optimizer_like(const magix::ParameterSet& params) {
  std::vector<ShardedTensor> out;
  for (size_t i = 0; i < params.size(); ++i) {
    const magix::ParamInfo& p = params.info(i);
    for (const magix::ShardBox& box : magix::local_boxes(p)) {  // a fused tensor's parts
      out.push_back({"mu/" + p.name, p.global_shape, p.spec, box.start,
                     magix::test::pattern_box(100 + i, p.global_shape, box.start, box.extent)});
      out.push_back({"nu/" + p.name, p.global_shape, p.spec, box.start,
                     magix::test::pattern_box(500 + i, p.global_shape, box.start, box.extent,
                                              DType::kBF16)});
    }
  }
  out.push_back({"count", {}, {}, {}, magix::test::pattern_full(7, {})});
  return out;
}

int run_save(const fs::path& dir, int d, int m) {
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  magix::Decoder model = magix::load_decoder(model_dir.string(), mesh);
  magix::CheckpointManager manager(dir, mesh, {.max_to_keep = 2, .async = true});
  magix::CheckpointItems items{{"model", magix::sharded_tensors(model.params())},
                               {"optimizer", optimizer_like(model.params())}};
  manager.save(1, items, {{"step", 1}}, {model_dir / "config.json"});
  // Training goes on: the saved values are those at save() time.
  for (size_t i = 0; i < model.params().size(); ++i) model.params().tensor(i).fill_zero();
  manager.poll();
  manager.wait();
  expect(manager.latest_step() == 1, "latest step after wait", mesh.world_rank());
  return failures;
}

int run_restore(const fs::path& dir, int d, int m) {
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int rank = mesh.world_rank();
  magix::CheckpointManager manager(dir, mesh);
  expect(manager.latest_step() == 1, "latest step", rank);
  const fs::path step = manager.step_dir(1);
  magix::Decoder want = magix::load_decoder(model_dir.string(), mesh);
  magix::Decoder got = magix::load_checkpoint_decoder(step, mesh);
  for (size_t i = 0; i < want.params().size(); ++i) {
    expect(magix::test::bitwise_equal(got.params().tensor(i), want.params().tensor(i)),
           "param " + want.params().info(i).name, rank);
  }
  magix::CheckpointReader reader(step);
  std::vector<ShardedTensor> expected = optimizer_like(want.params());
  std::vector<ShardedTensor> targets;
  for (const ShardedTensor& t : expected) {
    targets.push_back({t.name, t.global_shape, t.spec, t.box_start,
                       magix::Tensor(t.local.shape(), t.local.dtype())});
  }
  reader.read("optimizer", targets);
  for (size_t i = 0; i < targets.size(); ++i) {
    expect(magix::test::bitwise_equal(targets[i].local, expected[i].local),
           "optimizer " + targets[i].name, rank);
  }
  expect(reader.trainer_state().at("step") == 1, "trainer state", rank);
  return failures;
}

int run_once(const fs::path& dir) {
  magix::Mesh mesh = magix::create_device_mesh({2, 1});
  const int rank = mesh.world_rank();
  struct Spec {
    std::string name;
    Shape shape;
    magix::PartitionSpec spec;
    DType dtype;
  };
  const std::vector<Spec> specs = {
      {"fsdp_rows", {8, 6}, {"data", std::nullopt}, DType::kF32},
      {"fsdp_cols", {6, 8}, {std::nullopt, "data"}, DType::kBF16},
      {"replicated", {5, 3}, {}, DType::kF32},
      {"model_axis", {4, 4}, {"model"}, DType::kF32},  // model size 1: replicated over data
      {"scalar", {}, {}, DType::kF32},
  };
  std::vector<ShardedTensor> tensors;
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    magix::ShardBox box = magix::shard_box(s.name, s.shape, s.spec, mesh);
    tensors.push_back({s.name, s.shape, s.spec, box.start,
                       magix::test::pattern_box(i, s.shape, box.start, box.extent, s.dtype)});
  }
  {
    magix::CheckpointManager manager(dir, mesh, {.async = true});
    manager.save(4, {{"state", tensors}}, {{"step", 4}});
    manager.wait();
  }
  const fs::path step = dir / "000004";
  if (rank == 0) {
    std::ifstream in(step / "index.json");
    const nlohmann::json index = nlohmann::json::parse(in);
    uint64_t expected_bytes = 0;
    for (const Spec& s : specs) {
      const nlohmann::json& t = index.at("items").at("state").at(s.name);
      const int64_t n = magix::shape_numel(s.shape);
      expected_bytes += static_cast<uint64_t>(n) * magix::dtype_size(s.dtype);
      std::vector<int> count(static_cast<size_t>(n), 0);
      for (const nlohmann::json& sh : t.at("shards")) {
        const Shape start = sh.at("start").get<Shape>(), extent = sh.at("extent").get<Shape>();
        const int64_t m = magix::shape_numel(extent);
        for (int64_t e = 0; e < m; ++e) {
          int64_t rem = e, g = 0, stride = 1;
          for (size_t dd = s.shape.size(); dd-- > 0;) {
            g += (start[dd] + rem % extent[dd]) * stride;
            rem /= extent[dd];
            stride *= s.shape[dd];
          }
          ++count[static_cast<size_t>(g)];
        }
      }
      bool once = true;
      for (int c : count) once = once && c == 1;
      expect(once, s.name + ": every element in exactly one shard", rank);
      const size_t want_shards = s.spec.uses("data") ? 2 : 1;
      expect(t.at("shards").size() == want_shards, s.name + ": number of shards", rank);
      if (!s.spec.uses("data")) {
        expect(t.at("shards")[0].at("file") == "state/rank-00000.bin",
               s.name + ": the replicated box is written by data rank 0", rank);
      }
    }
    uint64_t on_disk = 0;
    for (const auto& e : fs::directory_iterator(step / "state")) on_disk += fs::file_size(e.path());
    expect(on_disk == expected_bytes,
           fmt::format("rank files hold {} bytes, the tensors {}", on_disk, expected_bytes), rank);
  }
  // Read back whole on every rank (a 1x1 view).
  magix::CheckpointReader reader(step);
  for (size_t i = 0; i < specs.size(); ++i) {
    const Spec& s = specs[i];
    std::vector<ShardedTensor> t{
        {s.name, s.shape, {}, Shape(s.shape.size(), 0), magix::Tensor(s.shape, s.dtype)}};
    reader.read("state", t);
    expect(magix::test::bitwise_equal(t[0].local, magix::test::pattern_full(i, s.shape, s.dtype)),
           s.name + ": read back whole", rank);
  }
  mesh.world().barrier();
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    int rc = 2;
    if ((mode == "save" || mode == "restore") && (argc == 5 || argc == 6)) {
      const int d = std::stoi(argv[3]), m = std::stoi(argv[4]);
      if (argc == 6) model_dir = kModels / argv[5];
      rc = mode == "save" ? run_save(argv[2], d, m) : run_restore(argv[2], d, m);
    } else if (mode == "once" && argc == 3) {
      rc = run_once(argv[2]);
    } else {
      std::fprintf(stderr, "usage: checkpoint_mesh_probe save|restore DIR D M | once DIR\n");
      return 2;
    }
    if (rc == 0 && runtime.world_rank() == 0) std::printf("%s ok\n", mode.c_str());
    return rc == 0 ? 0 : 1;
  } catch (const std::exception& e) {
    runtime.abort(e.what());
  }
}
