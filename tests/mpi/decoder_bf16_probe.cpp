// Runs under mpirun as every rank of a D x M mesh: bf16 parameter storage on the mesh
// (DecoderOptions::weight_dtype, per-layer gather + widening over the data axis).
//   decoder_bf16_probe check CASE D M
//       (1) every rank loads fixture CASE with bf16 storage and runs loss_and_grad on its data
//       rank's rows; an fp32 decoder whose weights were rounded to bf16 does the same on the same
//       mesh: loss, forward-only loss, logits and every local gradient shard must be the same
//       bits (the bf16 decoder computes in fp32 on the widened values);
//       (2) rank 0 runs the bf16 decoder on a 1x1 mesh of its own with the whole batch: the mesh
//       loss within 1e-6 relative, and every rank's gradient shard within 1e-5 relative L2 of
//       the same box of the 1x1 gradient (mesh invariance, as decoder_mesh_probe checks fp32).
//   decoder_bf16_probe mixed CASE D M
//       bf16 mixed precision (DecoderOptions::compute_dtype BF16) on the mesh against the same on
//       a 1x1 mesh (rank 0): loss within 1e-3 relative, every gradient shard within 1e-2
//       relative L2 of its box of the 1x1 gradient, or no further from it than the 1x1 bf16
//       gradient is from transformers' fp32 one (tensor-parallel partial sums are added in a
//       different order before the next bf16 rounding), and the loss within 1e-2 of HF's fp32.
//   decoder_bf16_probe dump CASE D M PREFIX
//       fp32 storage: each rank writes PREFIX.<rank>.safetensors with its loss, forward-only
//       loss, logits and local gradients (to compare two builds bit for bit with `cmp`).
// One line per check; exit status 1 if any fails. Errors abort the world (Runtime::abort).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "../common/fixture_batch.hpp"
#include "../common/shard_pieces.hpp"
#include "../common/tensor_compare.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "magix/safetensors.hpp"
#include "magix/train_step.hpp"

namespace {

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

magix::test::ProbeReport report;  // this rank's checks

// The fixture's inputs as one global batch (targets[t] = labels[t + 1], -100 -> ignored), the
// rows repeated up to at least `min_rows` (the mean loss and its gradients are unchanged).
magix::TokenBatch read_batch(const std::filesystem::path& dir, int64_t min_rows) {
  magix::SafetensorsReader ref(dir / "reference.safetensors");
  const int64_t rows = ref.read("input_ids").dim(0);
  return magix::test::read_fixture_batch(ref, std::max<int64_t>(1, (min_rows + rows - 1) / rows));
}

// Data rank r's contiguous rows of a global batch over D data ranks.
magix::TokenBatch data_slice(const magix::TokenBatch& b, int r, int D) {
  MAGIX_CHECK(b.batch % D == 0, "{} rows do not split over {} data ranks", b.batch, D);
  return magix::slice_rows(b, r * (b.batch / D), b.batch / D);
}

bool same_bits(const magix::Tensor& a, const magix::Tensor& b) {
  return a.dtype() == b.dtype() && a.shape() == b.shape() &&
         std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

double worst_shard_error(const magix::ParameterSet& g, const magix::ParameterSet* full,
                         const magix::Mesh& mesh, const std::string& where, double tol,
                         const magix::SafetensorsReader* noise_ref = nullptr);
int verdict(const magix::Mesh& mesh, const std::string& name);

int run_check(const std::string& name, int d, int m) {
  const std::filesystem::path dir = kModels / name;
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int D = mesh.data_size(), M = mesh.model_size();
  const bool root = mesh.world_rank() == 0;
  const std::string where = fmt::format("{} bf16 on {}x{} rank {}", name, D, M, mesh.world_rank());
  const magix::TokenBatch global = read_batch(dir, D);
  const double count = static_cast<double>(global.count_targets());
  const magix::TokenBatch mine = data_slice(global, mesh.data_rank(), D);

  // (1) bf16 storage against fp32 storage of the rounded weights, same mesh: the same bits.
  magix::Decoder bf16 =
      magix::load_decoder(dir.string(), mesh, {.weight_dtype = magix::DType::kBF16});
  magix::Decoder f32 = magix::load_decoder(dir.string(), mesh);
  bool stored_bf16 = true;
  for (size_t i = 0; i < f32.params().size(); ++i) {
    magix::Tensor& t = f32.params().tensor(i);
    t = t.to(magix::DType::kBF16).to(magix::DType::kF32);
    stored_bf16 = stored_bf16 && bf16.params().tensor(i).dtype() == magix::DType::kBF16;
  }
  report(stored_bf16, where + ": every parameter shard stored as BF16");
  magix::ParameterSet g16 = bf16.params().zeros_like(), g32 = f32.params().zeros_like();
  const magix::LossResult r16 = bf16.loss_and_grad(mine, count, g16);
  const magix::LossResult r32 = f32.loss_and_grad(mine, count, g32);
  report(r16.loss == r32.loss,
         fmt::format("{}: loss {:.9g} vs fp32 rounded-weights {:.9g} (bitwise)", where, r16.loss,
                     r32.loss));
  const double fwd16 = bf16.loss(mine, count).loss, fwd32 = f32.loss(mine, count).loss;
  report(fwd16 == fwd32 && fwd16 == r16.loss,
         fmt::format("{}: forward-only loss {:.9g} / {:.9g} (bitwise)", where, fwd16, fwd32));
  report(same_bits(bf16.logits(mine), f32.logits(mine)), where + ": logits (bitwise)");
  size_t differing = 0;
  for (size_t i = 0; i < g16.size(); ++i) {
    if (!same_bits(g16.tensor(i), g32.tensor(i))) {
      ++differing;
      report(false, fmt::format("{}: grad {} differs from the fp32 run", where, g16.info(i).name));
    }
  }
  report(differing == 0, fmt::format("{}: {} gradient shards bitwise equal to the fp32 run", where,
                                     g16.size() - differing));

  // (2) Against the bf16 decoder on a 1x1 mesh (rank 0 holds it).
  magix::Mesh local;
  magix::ParameterSet g1;
  if (root) {
    magix::Decoder single =
        magix::load_decoder(dir.string(), local, {.weight_dtype = magix::DType::kBF16});
    g1 = single.params().zeros_like();
    const double loss1 = single.loss_and_grad(global, count, g1).loss;
    const double rel = std::fabs(r16.loss - loss1) / std::fabs(loss1);
    report(rel <= 1e-6,
           fmt::format("{}: loss vs 1x1 {:.9g}: rel {:.3g} (tol 1e-6)", where, loss1, rel));
  }
  const double worst = worst_shard_error(g16, root ? &g1 : nullptr, mesh, where, 1e-5);
  if (root) {
    report(worst <= 1e-5, fmt::format("{}: every rank's gradient shard vs 1x1: worst rel L2 {:.3g} "
                                      "(tol 1e-5)",
                                      where, worst));
  }
  return verdict(mesh, name);
}

// Every rank's gradient shard against its box of `full` (held by rank 0): the worst relative
// L2 error; each shard above `tol` is reported.
// With `noise_ref` (the fixture's fp32 gradients from transformers), a shard also passes when
// its distance to the 1x1 gradient is no larger than the 1x1 bf16 gradient's own distance to
// fp32 on that box: for small gradients that are sums with much cancellation (a k_proj bias
// after rope) bf16 rounding noise is large relative to the value, on every mesh alike.
double worst_shard_error(const magix::ParameterSet& g, const magix::ParameterSet* full,
                         const magix::Mesh& mesh, const std::string& where, double tol,
                         const magix::SafetensorsReader* noise_ref) {
  const int D = mesh.data_size(), M = mesh.model_size(), W = mesh.world_size();
  double worst = 0;
  for (size_t i = 0; i < g.size(); ++i) {
    const magix::ParamInfo& info = g.info(i);
    const magix::Tensor& local_g = g.tensor(i);
    std::vector<float> all(static_cast<size_t>(local_g.numel()) * W);
    mesh.world().all_gather(local_g.span<float>(), all);
    if (full == nullptr) continue;
    for (int r = 0; r < W; ++r) {
      const magix::ShardBox box =
          magix::shard_box(info.name, info.global_shape, info.spec, D, M, r / M, r % M);
      magix::Tensor got(box.extent);
      std::copy_n(all.data() + static_cast<size_t>(r) * local_g.numel(), local_g.numel(),
                  got.data<float>());
      const magix::Tensor want = magix::test::local_of(full->tensor(i), info, D, M, r / M, r % M);
      double e = magix::test::rel_l2(got, want);
      if (noise_ref != nullptr && e > tol) {
        const magix::Tensor hf = magix::test::local_of(noise_ref->read_f32("grad." + info.name),
                                                       info, D, M, r / M, r % M);
        const double noise = magix::test::rel_l2(want, hf);  // the 1x1 bf16 run vs fp32
        if (e <= noise) e = std::min(e, tol);                // within bf16's own noise
      }
      worst = std::max(worst, e);
      if (e > tol) {
        report(false, fmt::format("{}: grad {} of rank {}: rel L2 vs 1x1 {:.3g} (tol {})", where,
                                  info.name, r, e, tol));
      }
    }
  }
  return worst;
}

int verdict(const magix::Mesh& mesh, const std::string& name) {
  std::vector<float> failures = {static_cast<float>(report.failures())};
  mesh.world().all_reduce(failures, magix::ReduceOp::kSum);
  if (mesh.world_rank() == 0) {
    std::printf("%s: %s\n", name.c_str(), failures[0] > 0 ? "FAILED" : "all checks passed");
  }
  return failures[0] > 0 ? 1 : 0;
}

int run_mixed(const std::string& name, int d, int m) {
  const std::filesystem::path dir = kModels / name;
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int D = mesh.data_size(), M = mesh.model_size();
  const bool root = mesh.world_rank() == 0;
  const std::string where =
      fmt::format("{} bf16 compute on {}x{} rank {}", name, D, M, mesh.world_rank());
  const magix::TokenBatch global = read_batch(dir, D);
  const double count = static_cast<double>(global.count_targets());
  const magix::TokenBatch mine = data_slice(global, mesh.data_rank(), D);
  const magix::DecoderOptions bf16{.compute_dtype = magix::DType::kBF16};
  magix::Decoder model = magix::load_decoder(dir.string(), mesh, bf16);
  magix::ParameterSet g = model.params().zeros_like();
  const double loss = model.loss_and_grad(mine, count, g).loss;
  report(model.loss(mine, count).loss == loss, where + ": forward-only loss equals the step's");
  magix::Mesh local;
  magix::ParameterSet g1;
  if (root) {
    magix::Decoder single = magix::load_decoder(dir.string(), local, bf16);
    g1 = single.params().zeros_like();
    const double loss1 = single.loss_and_grad(global, count, g1).loss;
    const double rel = std::fabs(loss - loss1) / std::fabs(loss1);
    report(rel <= 1e-3, fmt::format("{}: loss {:.9g} vs 1x1 {:.9g}: rel {:.3g} (tol 1e-3)", where,
                                    loss, loss1, rel));
    magix::SafetensorsReader ref(dir / "reference.safetensors");
    const double hf = ref.read_f32("loss").data<float>()[0];
    report(std::fabs(loss - hf) <= 1e-2 * std::fabs(hf),
           fmt::format("{}: loss vs HF fp32 {:.9g}: rel {:.3g} (tol 1e-2)", where, hf,
                       std::fabs(loss - hf) / std::fabs(hf)));
  }
  const magix::SafetensorsReader ref(dir / "reference.safetensors");
  const double worst = worst_shard_error(g, root ? &g1 : nullptr, mesh, where, 1e-2, &ref);
  if (root) {
    report(worst <= 1e-2, fmt::format("{}: every rank's gradient shard vs 1x1: worst rel L2 {:.3g} "
                                      "(tol 1e-2)",
                                      where, worst));
  }
  return verdict(mesh, name);
}

int run_dump(const std::string& name, int d, int m, const std::string& prefix) {
  const std::filesystem::path dir = kModels / name;
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int D = mesh.data_size();
  const magix::TokenBatch global = read_batch(dir, D);
  const double count = static_cast<double>(global.count_targets());
  const magix::TokenBatch mine = data_slice(global, mesh.data_rank(), D);
  magix::Decoder model = magix::load_decoder(dir.string(), mesh);
  magix::ParameterSet g = model.params().zeros_like();
  const std::vector<double> losses = {model.loss_and_grad(mine, count, g).loss,
                                      model.loss(mine, count).loss};
  magix::Tensor loss64({2}, magix::DType::kI64);
  std::memcpy(loss64.bytes(), losses.data(), 2 * sizeof(double));  // the double bits
  const magix::Tensor logits = model.logits(mine);
  std::vector<magix::NamedTensor> out = {{"loss_bits", &loss64}, {"logits", &logits}};
  for (size_t i = 0; i < g.size(); ++i) out.push_back({"grad." + g.info(i).name, &g.tensor(i)});
  magix::write_safetensors(fmt::format("{}.{}.safetensors", prefix, mesh.world_rank()), out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "check" && argc == 5) {
      return run_check(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    }
    if (mode == "mixed" && argc == 5) {
      return run_mixed(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    }
    if (mode == "dump" && argc == 6) {
      return run_dump(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argv[5]);
    }
    std::fprintf(stderr, "usage: decoder_bf16_probe check|mixed CASE D M | dump CASE D M PREFIX\n");
    return 2;
  } catch (const magix::Error& e) {
    runtime.abort(e.what());
  }
}
