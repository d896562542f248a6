// Runs under mpirun as every rank of a D x M mesh: the decoder's loss and every parameter
// gradient of a fixture model (tests/fixtures/models/<case>) against HF transformers and against
// the decoder's own 1x1 result computed in the same process (mesh invariance, DESIGN.md §3).
//   decoder_mesh_probe check CASE D M
//       every rank loads its shards, takes its data rank's contiguous slice of the global batch,
//       runs loss_and_grad (token count = the global number of counted targets); rank 0 gathers
//       every gradient whole and compares: loss 1e-5 relative and gradients 1e-4 relative L2
//       against HF; loss 1e-6 relative and gradients 1e-5 relative L2 against the 1x1 run;
//       also the forward-only loss (1e-6 to loss_and_grad's) and every row's full-vocabulary
//       logits against HF's (max diff 1e-4 * max(1, max |logit|), as fixtures_test.cpp).
//       When D exceeds the fixture's rows, the batch repeats the rows (in both runs) up to D;
//       the mean loss and its gradients are unchanged by that, so HF still applies.
//   decoder_mesh_probe overlap CASE D M
//       the same decoder with its FSDP collectives on the communication thread
//       (DecoderOptions::overlap_comm, the default) and all blocking: bit for bit the same
//       gradients of two accumulated micro-batches, forward-only loss, three AdamW steps' losses
//       and parameters, on every rank; in fp32, and with bf16 weights, bf16 compute and
//       recomputation. Also that the data group really runs tasks in the background (D > 1).
//   decoder_mesh_probe load_error CASE D M TEXT
//       loading must fail on every rank with a magix::Error whose message contains TEXT.
// One line per check; exit status 1 if any fails. Errors abort the world (Runtime::abort).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "../common/fixture_batch.hpp"
#include "../common/shard_pieces.hpp"
#include "../common/tensor_compare.hpp"
#include "magix/distributed.hpp"
#include "magix/error.hpp"
#include "magix/model.hpp"
#include "magix/optimizer.hpp"
#include "magix/safetensors.hpp"
#include "magix/train_step.hpp"

namespace {

using magix::test::rel;
using magix::test::rel_l2;

const std::filesystem::path kModels = std::filesystem::path(MAGIX_FIXTURES_DIR) / "models";

magix::test::ProbeReport report;  // this rank's checks

// The whole tensor of parameter `info` from every rank's box: an all_gather over the world
// (every box has the same extent: dims divide evenly), each rank's block placed at the boxes
// that shard_pieces gives for its grid position. Replicas must agree: `replica_diff` is the largest
// relative difference between two copies of an element. Tensors of 1 or 2 dims.
magix::Tensor gather_whole(const magix::Mesh& mesh, const magix::ParamInfo& info,
                           const magix::Tensor& local, double& replica_diff) {
  const int W = mesh.world_size(), M = mesh.model_size(), D = mesh.data_size();
  MAGIX_CHECK(info.global_shape.size() <= 2, "'{}': only 1-D and 2-D parameters", info.name);
  std::vector<float> all(static_cast<size_t>(local.numel()) * W);
  mesh.world().all_gather(local.span<float>(), all);
  magix::Tensor full(info.global_shape);
  std::vector<int> seen(static_cast<size_t>(full.numel()), 0);
  replica_diff = 0;
  for (int r = 0; r < W; ++r) {
    const float* src = all.data() + static_cast<size_t>(r) * local.numel();
    magix::test::for_each_local_element(info, D, M, r / M, r % M, [&](int64_t g, int64_t l) {
      const auto e = static_cast<size_t>(g);
      const float v = src[l];
      float& dst = full.data<float>()[e];
      if (seen[e]) {
        replica_diff = std::max(replica_diff, rel(v, dst));
      } else {
        dst = v;
      }
      seen[e] = 1;
    });
  }
  MAGIX_CHECK(std::all_of(seen.begin(), seen.end(), [](int s) { return s == 1; }),
              "'{}': the boxes of the ranks do not cover the tensor", info.name);
  return full;
}

int run_check(const std::string& name, int d, int m) {
  const std::filesystem::path dir = kModels / name;
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int D = mesh.data_size(), M = mesh.model_size();
  const bool root = mesh.world_rank() == 0;
  magix::SafetensorsReader ref(dir / "reference.safetensors");
  const int64_t fixture_rows = ref.entry("input_ids").shape.at(0);
  const int64_t repeat = D > fixture_rows ? (D + fixture_rows - 1) / fixture_rows : 1;
  const magix::TokenBatch global = magix::test::read_fixture_batch(ref, repeat);
  MAGIX_CHECK(global.batch % D == 0, "{} rows do not split over {} data ranks", global.batch, D);
  const double token_count = static_cast<double>(global.count_targets());
  const std::string where = fmt::format("{} on {}x{}", name, D, M);
  if (root) {
    std::printf("%s: %lld rows (fixture %lld x %lld), %.0f counted targets\n", where.c_str(),
                static_cast<long long>(global.batch), static_cast<long long>(fixture_rows),
                static_cast<long long>(repeat), token_count);
  }

  // The mesh run: this data rank's contiguous rows.
  magix::Decoder model = magix::load_decoder(dir.string(), mesh);
  const int64_t rows = global.batch / D;
  const magix::TokenBatch mine = magix::slice_rows(global, mesh.data_rank() * rows, rows);
  magix::ParameterSet grads = model.params().zeros_like();
  const magix::LossResult res = model.loss_and_grad(mine, token_count, grads);
  // Forward only: the same loss; and the full-vocabulary logits of every row, gathered over data
  // (data ranks hold consecutive rows).
  const double loss_fwd = model.loss(mine, token_count).loss;
  const magix::Tensor logits_mine = model.logits(mine);
  std::vector<float> logits(static_cast<size_t>(logits_mine.numel()) * D);
  mesh.data().all_gather(logits_mine.span<float>(), logits);

  // The same batch on a 1x1 mesh of this process alone (rank 0 only).
  magix::Mesh local;
  std::optional<magix::Decoder> single;
  magix::ParameterSet grads1;
  magix::LossResult res1;
  if (root) {
    single.emplace(magix::load_decoder(dir.string(), local));
    grads1 = single->params().zeros_like();
    res1 = single->loss_and_grad(global, token_count, grads1);
    const double want = ref.read_f32("loss").data<float>()[0];
    report(rel(res.loss, want) <= 1e-5,
           fmt::format("{} loss {:.8g} vs HF {:.8g}: rel {:.3g} (tol 1e-5)", where, res.loss, want,
                       rel(res.loss, want)));
    report(rel(res.loss, res1.loss) <= 1e-6,
           fmt::format("{} loss vs 1x1 {:.8g}: rel {:.3g} (tol 1e-6)", where, res1.loss,
                       rel(res.loss, res1.loss)));
    report(rel(loss_fwd, res.loss) <= 1e-6,
           fmt::format("{} forward-only loss {:.8g}: rel {:.3g} to loss_and_grad's (tol 1e-6)",
                       where, loss_fwd, rel(loss_fwd, res.loss)));
    // Logits against HF's (fixtures_test.cpp's tolerance), repeated rows against their source.
    const magix::Tensor want_logits = ref.read_f32("logits");  // (rows, T, V)
    double max_ref = 0, max_diff = 0;
    for (size_t i = 0; i < logits.size(); ++i) {
      const float w = want_logits.data<float>()[static_cast<int64_t>(i) % want_logits.numel()];
      max_ref = std::max(max_ref, double(std::fabs(w)));
      max_diff = std::max(max_diff, double(std::fabs(logits[i] - w)));
    }
    const double tol = 1e-4 * std::max(1.0, max_ref);
    report(logits.size() == static_cast<size_t>(want_logits.numel() * repeat) && max_diff <= tol,
           fmt::format("{} logits ({} values) vs HF: max diff {:.3g} (tol {:.3g})", where,
                       logits.size(), max_diff, tol));
  }

  // Every gradient, gathered whole (a collective: every rank takes part).
  size_t checked = 0;
  for (size_t i = 0; i < grads.size(); ++i) {
    const magix::ParamInfo& info = grads.info(i);
    double replica_diff = 0;
    magix::Tensor g = gather_whole(mesh, info, grads.tensor(i), replica_diff);
    if (!root) continue;
    const magix::Tensor g_ref = ref.read_f32("grad." + info.name);
    MAGIX_CHECK(g_ref.shape() == g.shape(), "'{}': reference gradient shape {}, gathered {}",
                info.name, magix::shape_str(g_ref.shape()), magix::shape_str(g.shape()));
    const double e_hf = rel_l2(g, g_ref), e_1 = rel_l2(g, grads1.tensor(i));
    report(e_hf <= 1e-4 && e_1 <= 1e-5 && replica_diff <= 1e-6,
           fmt::format("{} grad {} {}: rel L2 vs HF {:.3g} (tol 1e-4), vs 1x1 {:.3g} (tol 1e-5), "
                       "replicas differ {:.3g} (tol 1e-6)",
                       where, info.name, info.spec.str(), e_hf, e_1, replica_diff));
    ++checked;
  }
  if (root) {
    size_t ref_grads = 0;
    for (const auto& e : ref.entries()) ref_grads += e.name.starts_with("grad.");
    report(checked == ref_grads, fmt::format("{}: {} gradients checked, the reference has {}",
                                             where, checked, ref_grads));
    std::printf("%s: %s\n", where.c_str(), report.failures() ? "FAILED" : "all checks passed");
  }
  // Rank 0 decides for everyone (the other ranks compare nothing).
  std::vector<float> verdict = {static_cast<float>(report.failures())};
  mesh.world().broadcast(std::as_writable_bytes(std::span<float>(verdict)), 0);
  return verdict[0] > 0 ? 1 : 0;
}

// Whether two tensors hold the same bytes.
bool same_bits(const magix::Tensor& a, const magix::Tensor& b) {
  return a.shape() == b.shape() && a.dtype() == b.dtype() &&
         std::memcmp(a.bytes(), b.bytes(), a.nbytes()) == 0;
}

int run_overlap(const std::string& name, int d, int m) {
  const std::filesystem::path dir = kModels / name;
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const int D = mesh.data_size(), M = mesh.model_size();
  const std::string where = fmt::format("{} on {}x{}, rank {}", name, D, M, mesh.world_rank());
  {
    magix::PendingCollective probe = mesh.data().run_async([](magix::Communicator&) {});
    report(probe.pending() == (D > 1),
           fmt::format("{}: the data group runs tasks {} (data axis of {})", where,
                       probe.pending() ? "on its communication thread" : "on the caller", D));
  }
  magix::SafetensorsReader ref(dir / "reference.safetensors");
  const int64_t fixture_rows = ref.entry("input_ids").shape.at(0);
  // At least 2 rows per data rank: two micro-batches of one row.
  const int64_t repeat = (2 * D + fixture_rows - 1) / fixture_rows;
  const magix::TokenBatch global = magix::test::read_fixture_batch(ref, repeat);
  const int64_t rows = global.batch / D;
  MAGIX_CHECK(rows >= 2 && global.batch % D == 0, "{} rows do not split over {} data ranks",
              global.batch, D);
  const magix::TokenBatch mine = magix::slice_rows(global, mesh.data_rank() * rows, rows);
  const double token_count = static_cast<double>(global.count_targets());
  for (const bool low : {false, true}) {
    magix::DecoderOptions options;
    if (low) {
      options.weight_dtype = magix::DType::kBF16;
      options.compute_dtype = magix::DType::kBF16;
      options.recompute = true;
    }
    const std::string what =
        fmt::format("{}{}", where, low ? " (bf16 weights and compute, recompute)" : " (fp32)");
    magix::Decoder on = magix::load_decoder(dir.string(), mesh, options);
    options.overlap_comm = false;
    magix::Decoder off = magix::load_decoder(dir.string(), mesh, options);
    MAGIX_CHECK(on.options().overlap_comm, "overlap_comm is on by default");
    // Two micro-batches accumulated into one gradient.
    magix::ParameterSet g_on = on.params().zeros_like(), g_off = off.params().zeros_like();
    const int64_t half = rows / 2;
    for (magix::Decoder* dec : {&on, &off}) {
      magix::ParameterSet& g = dec == &on ? g_on : g_off;
      dec->loss_and_grad(magix::slice_rows(mine, 0, half), token_count, g);
      dec->loss_and_grad(magix::slice_rows(mine, half, rows - half), token_count, g);
    }
    size_t same_grads = 0;
    for (size_t i = 0; i < g_on.size(); ++i) same_grads += same_bits(g_on.tensor(i), g_off.tensor(i));
    report(same_grads == g_on.size(),
           fmt::format("{}: {} of {} accumulated gradient shards bitwise equal", what, same_grads,
                       g_on.size()));
    const double fwd_on = on.loss(mine, token_count).loss;
    const double fwd_off = off.loss(mine, token_count).loss;
    report(fwd_on == fwd_off,
           fmt::format("{}: forward-only loss {:.17g} vs {:.17g}", what, fwd_on, fwd_off));
    magix::AdamW opt_on = magix::make_opt_state({}, on.params());
    magix::AdamW opt_off = magix::make_opt_state({}, off.params());
    for (int step = 0; step < 3; ++step) {
      const magix::TrainStepResult r_on = magix::train_step(on, opt_on, mine, 1e-2);
      const magix::TrainStepResult r_off = magix::train_step(off, opt_off, mine, 1e-2);
      report(r_on.loss == r_off.loss && r_on.grad_norm == r_off.grad_norm,
             fmt::format("{}: step {} loss {:.17g} vs {:.17g}, grad norm {:.17g} vs {:.17g}", what,
                         step + 1, r_on.loss, r_off.loss, r_on.grad_norm, r_off.grad_norm));
    }
    size_t same_params = 0;
    for (size_t i = 0; i < on.params().size(); ++i) {
      same_params += same_bits(on.params().tensor(i), off.params().tensor(i));
    }
    report(same_params == on.params().size(),
           fmt::format("{}: {} of {} parameter shards bitwise equal after 3 AdamW steps", what,
                       same_params, on.params().size()));
  }
  // Every rank must pass.
  std::vector<float> failures = {static_cast<float>(report.failures())};
  mesh.world().all_reduce(failures, magix::ReduceOp::kMax);
  if (mesh.world_rank() == 0) {
    std::printf("%s on %dx%d: %s\n", name.c_str(), D, M,
                failures[0] > 0 ? "FAILED" : "overlapped and blocking collectives agree bitwise");
  }
  return failures[0] > 0 ? 1 : 0;
}

int run_load_error(const std::string& name, int d, int m, const std::string& text) {
  magix::Mesh mesh = magix::create_device_mesh({d, m});
  const std::string where = fmt::format("{} on {}x{}", name, mesh.data_size(), mesh.model_size());
  try {
    magix::Decoder model = magix::load_decoder((kModels / name).string(), mesh);
  } catch (const magix::Error& e) {
    const std::string msg = e.what();
    report(msg.find(text) != std::string::npos,
           fmt::format("rank {}: {} load error mentions '{}': {}", mesh.world_rank(), where, text,
                       msg));
    return report.failures() ? 1 : 0;
  }
  report(false, fmt::format("rank {}: {} loaded; expected an error mentioning '{}'",
                            mesh.world_rank(), where, text));
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  magix::Runtime runtime(&argc, &argv);
  try {
    const std::string mode = argc > 1 ? argv[1] : "";
    if (mode == "check" && argc == 5) {
      return run_check(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    }
    if (mode == "overlap" && argc == 5) {
      return run_overlap(argv[2], std::atoi(argv[3]), std::atoi(argv[4]));
    }
    if (mode == "load_error" && argc == 6) {
      return run_load_error(argv[2], std::atoi(argv[3]), std::atoi(argv[4]), argv[5]);
    }
    std::fprintf(stderr, "usage: decoder_mesh_probe check|overlap CASE D M | load_error CASE D M TEXT\n");
    return 2;
  } catch (const magix::Error& e) {
    runtime.abort(e.what());
  }
}
