#include "backends/cpu/amx_gemm.hpp"

#include "magix/error.hpp"

#if defined(__x86_64__)

#include <cpuid.h>
#include <immintrin.h>
#include <omp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "backends/cpu/convert.hpp"
#include "backends/cpu/scratch_buffer.hpp"

// Functions that execute AMX or AVX-512 instructions carry these targets; the rest of the file
// (and the program) keeps the build's baseline ISA, and none of them runs unless
// amx_gemm_available().
#define MAGIX_AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")))
#define MAGIX_AVX512_TARGET __attribute__((target("avx512f,avx512bw,avx512vl")))

// GCC 12's AVX-512 intrinsics start several results from _mm512_undefined_*(), which
// -W(maybe-)uninitialized reports once they are inlined into target functions; nothing in this
// file reads an uninitialised value.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace magix::cpu {

namespace {

// Tiles: 16 rows of 64 bytes; a bf16 operand tile is 16 x 32 values, an fp32 accumulator 16 x 16.
constexpr int64_t kTile = 16;        // rows of a tile; fp32 columns of an accumulator
constexpr int64_t kTileK = 32;       // bf16 values of K in one tile row
constexpr int64_t kTileElems = 512;  // bf16 values in one tile
// Rows of A (M) handled per pass over B: up to 256, in equal chunks of a multiple of 16 (129 rows
// are one pass of 144, not 128 and then 1: each pass reads, and in the not-transposed product
// packs, all of B). Measured with cold weights at 512 rows (docs/kernels.md): passes of 256 ran
// the input gradients 1.2x and 1.5x as fast as passes of 128 and 512, the forward within 5%.
constexpr int64_t kMaxRowChunk = 256;

int64_t row_chunk(int64_t M) {
  const int64_t chunks = (M + kMaxRowChunk - 1) / kMaxRowChunk;
  const int64_t rows = (M + chunks - 1) / chunks;
  return (rows + kTile - 1) / kTile * kTile;
}

// The pair-interleaved (trans_b false) product packs B in panels of kKChunk rows x kPanelCols
// columns (128 KB, in L2 while it meets every row of A; rows of B read 512 bytes at a time).
// Chosen by measurement (docs/kernels.md): 64-1024 x 64-2048 tried, 256 x 256 the fastest.
constexpr int64_t kKChunk = 256;
constexpr int64_t kPanelCols = 256;
// The transposed (trans_b) product meets a 32-row panel of B with every pair of row blocks of
// A in slices of 8 K blocks (256 of K): a slice of the panel (16 KB) and of a pair of packed row
// blocks (16 KB) then fit in L1 together. Measured (a scratch program, one thread): the same speed
// as whole K at K = 2048, 1.2x at K = 5632.
constexpr int64_t kKBlocksBt = 8;

constexpr int kArchReqXcompPerm = 0x1023;
constexpr int kXfeatureXtiledata = 18;

bool detect() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx) == 0) return false;
  const bool avx512f = (ebx >> 16) & 1u, avx512bw = (ebx >> 30) & 1u, avx512vl = (ebx >> 31) & 1u;
  const bool amx_bf16 = (edx >> 22) & 1u, amx_tile = (edx >> 24) & 1u;
  if (!(avx512f && avx512bw && avx512vl && amx_bf16 && amx_tile)) return false;
  // The kernel must enable the XTILEDATA state for this process before the first tile instruction
  // (it is off by default since Linux 5.16 and absent before).
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}

struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Eight 16 x 64-byte tiles: 0-3 accumulators, 4-5 first operands, 6-7 second operands.
MAGIX_AMX_TARGET void configure_tiles() {
  TileConfig config;
  for (int t = 0; t < 8; t++) {
    config.colsb[t] = 64;
    config.rows[t] = kTile;
  }
  // Not _tile_loadconfig: GCC 12's declares its operand as 8 bytes of memory, so the stores
  // of the other 56 could be dropped as dead.
  asm volatile("ldtilecfg %0" : : "m"(config));
}

MAGIX_AMX_TARGET void release_tiles() {
  _tile_release();
}

// Scratch of one call, owned by the calling thread and allocated before its parallel region (an
// allocation failure then throws outside the region): packed or padded A, fp32 partial sums, and
// one packed panel of B per thread.
struct CallScratch {
  ScratchBuffer packed_a, acc, panels;
};
CallScratch& call_scratch() {
  thread_local CallScratch scratch;
  return scratch;
}

// dst (16 x 16, row stride ldd floats) = transpose of src (16 x 16, row stride lds floats).
MAGIX_AVX512_TARGET void transpose16(const float* src, int64_t lds, float* dst, int64_t ldd) {
  __m512 r[16], t[16], u[16];
  for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
  }
  // u[4g + q] holds, in 128-bit lane l, column 4l + q of rows 4g .. 4g + 3.
  for (int g = 0; g < 4; g++) {
    const __m512d lo0 = _mm512_castps_pd(t[4 * g]), hi0 = _mm512_castps_pd(t[4 * g + 1]);
    const __m512d lo1 = _mm512_castps_pd(t[4 * g + 2]), hi1 = _mm512_castps_pd(t[4 * g + 3]);
    u[4 * g + 0] = _mm512_castpd_ps(_mm512_unpacklo_pd(lo0, lo1));
    u[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(lo0, lo1));
    u[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(hi0, hi1));
    u[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(hi0, hi1));
  }
  for (int q = 0; q < 4; q++) {
    const __m512 v0 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0x88);
    const __m512 v1 = _mm512_shuffle_f32x4(u[q], u[4 + q], 0xdd);
    const __m512 v2 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0x88);
    const __m512 v3 = _mm512_shuffle_f32x4(u[8 + q], u[12 + q], 0xdd);
    _mm512_storeu_ps(dst + q * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
    _mm512_storeu_ps(dst + (q + 8) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xdd));
    _mm512_storeu_ps(dst + (q + 4) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
    _mm512_storeu_ps(dst + (q + 12) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xdd));
  }
}

// One output row segment: out[j] = alpha acc[j] + bias[j] (+ out[j] if accumulate), n values.
MAGIX_AVX512_TARGET void finish_row(const float* acc, int64_t n, float alpha, const float* bias,
                                    bool accumulate, void* out, bool out_bf16) {
  alignas(64) float row[64];
  for (int64_t j0 = 0; j0 < n; j0 += 64) {
    const int64_t len = std::min<int64_t>(64, n - j0);
    for (int64_t j = 0; j < len; j += 16) {
      const __mmask16 mask = len - j >= 16 ? 0xffff : static_cast<__mmask16>((1u << (len - j)) - 1);
      __m512 v = _mm512_mul_ps(_mm512_set1_ps(alpha), _mm512_maskz_loadu_ps(mask, acc + j0 + j));
      if (bias != nullptr) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, bias + j0 + j));
      if (accumulate) {
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, static_cast<float*>(out) + j0 + j));
      }
      if (out_bf16) {
        _mm512_store_ps(row + j, v);
      } else {
        _mm512_mask_storeu_ps(static_cast<float*>(out) + j0 + j, mask, v);
      }
    }
    if (out_bf16) f32_to_bf16(row, static_cast<uint16_t*>(out) + j0, len);
  }
}

void* row_ptr(void* C, int64_t row, int64_t ldc, int64_t col, bool c_bf16) {
  return c_bf16 ? static_cast<void*>(static_cast<uint16_t*>(C) + row * ldc + col)
                : static_cast<void*>(static_cast<float*>(C) + row * ldc + col);
}

// ---- trans_b: C = A·Bᵀ, B (N, K) as stored. Computed as Cᵀ = B·Aᵀ: B's rows are first-operand
// tiles as they lie in memory; A is packed once into second-operand tiles (pairs of K
// interleaved, 16 rows of A per tile).

// Packs rows [0, M) of A (M <= kMaxRowChunk) into tiles: for row block mb (16 rows, past M zeros)
// and K block kb, the tile at packed + (mb * KB + kb) * kTileElems holds, in its row r, the pairs
// (A[16 mb + c][32 kb + 2r], A[16 mb + c][32 kb + 2r + 1]) for c = 0 .. 15.
MAGIX_AVX512_TARGET void pack_a_pairs(const uint16_t* A, int64_t lda, int64_t M, int64_t K,
                                      uint16_t* packed) {
  const int64_t KB = K / kTileK, MB = (M + kTile - 1) / kTile;
#pragma omp for schedule(static)
  for (int64_t job = 0; job < MB * KB; job++) {
    const int64_t mb = job / KB, kb = job % KB;
    alignas(64) float block[16 * 16];  // 32-bit pairs as floats (moved, never computed with)
    for (int64_t c = 0; c < kTile; c++) {
      const int64_t m = mb * kTile + c;
      if (m < M) {
        std::memcpy(block + c * 16, A + m * lda + kb * kTileK, 64);
      } else {
        std::memset(block + c * 16, 0, 64);
      }
    }
    transpose16(block, 16, reinterpret_cast<float*>(packed + job * kTileElems), 16);
  }
}

// The one tile kernel of both products. acc (16 R rows x 16 C columns of fp32, row stride ld
// floats; zeroed first if zero) += first · second over kbs blocks of K: first is 16 R rows of bf16
// with row stride ld_first, 32 values of K per block (first-operand tiles loaded where they lie);
// second0 (and second1) are packed second-operand tiles, one per K block, 16 columns each.
template <int R, int C>
MAGIX_AMX_TARGET void tile_block(const uint16_t* first, int64_t ld_first, const uint16_t* second0,
                                 const uint16_t* second1, int64_t kbs, float* acc, int64_t ld,
                                 bool zero) {
  const int64_t stride_acc = ld * 4, stride_first = ld_first * 2;
  if (zero) {
    _tile_zero(0);
    if constexpr (C == 2) _tile_zero(1);
    if constexpr (R == 2) _tile_zero(2);
    if constexpr (R == 2 && C == 2) _tile_zero(3);
  } else {
    _tile_loadd(0, acc, stride_acc);
    if constexpr (C == 2) _tile_loadd(1, acc + 16, stride_acc);
    if constexpr (R == 2) _tile_loadd(2, acc + 16 * ld, stride_acc);
    if constexpr (R == 2 && C == 2) _tile_loadd(3, acc + 16 * ld + 16, stride_acc);
  }
  for (int64_t kb = 0; kb < kbs; kb++) {
    _tile_loadd(4, first + kb * kTileK, stride_first);
    if constexpr (R == 2) _tile_loadd(5, first + kTile * ld_first + kb * kTileK, stride_first);
    _tile_loadd(6, second0 + kb * kTileElems, 64);
    if constexpr (C == 2) _tile_loadd(7, second1 + kb * kTileElems, 64);
    _tile_dpbf16ps(0, 4, 6);
    if constexpr (C == 2) _tile_dpbf16ps(1, 4, 7);
    if constexpr (R == 2) _tile_dpbf16ps(2, 5, 6);
    if constexpr (R == 2 && C == 2) _tile_dpbf16ps(3, 5, 7);
  }
  _tile_stored(0, acc, stride_acc);
  if constexpr (C == 2) _tile_stored(1, acc + 16, stride_acc);
  if constexpr (R == 2) _tile_stored(2, acc + 16 * ld, stride_acc);
  if constexpr (R == 2 && C == 2) _tile_stored(3, acc + 16 * ld + 16, stride_acc);
}

// tile_block with R, C in {1, 2} chosen at run time.
void run_tile_block(int rows, int cols, const uint16_t* first, int64_t ld_first,
                    const uint16_t* second0, const uint16_t* second1, int64_t kbs, float* acc,
                    int64_t ld, bool zero) {
  if (rows == 2 && cols == 2) {
    tile_block<2, 2>(first, ld_first, second0, second1, kbs, acc, ld, zero);
  } else if (rows == 2) {
    tile_block<2, 1>(first, ld_first, second0, second1, kbs, acc, ld, zero);
  } else if (cols == 2) {
    tile_block<1, 2>(first, ld_first, second0, second1, kbs, acc, ld, zero);
  } else {
    tile_block<1, 1>(first, ld_first, second0, second1, kbs, acc, ld, zero);
  }
}

void product_bt(int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                const uint16_t* B, int64_t ldb, const float* bias, bool accumulate, void* C,
                int64_t ldc, bool c_bf16, int threads) {
  const int64_t KB = K / kTileK;
  const int64_t NB = (N + 31) / 32;  // blocks of 32 rows of B (the last may have 16)
  const int64_t chunk = row_chunk(M);
  uint16_t* packed =
      call_scratch().packed_a.get<uint16_t>((chunk / kTile) * KB * kTileElems, "amx_gemm_bf16");
  // Per thread: the accumulators of a 32-row panel of B against every pair of row blocks.
  const int64_t acc_per_thread = (chunk / 32 + 1) * 32 * 32;
  float* accs = call_scratch().acc.get<float>(threads * acc_per_thread, "amx_gemm_bf16");
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t rows = std::min(chunk, M - m0);
    const int64_t MB = (rows + kTile - 1) / kTile;
#pragma omp parallel num_threads(threads)
    {
      pack_a_pairs(A + m0 * lda, lda, rows, K, packed);  // ends with the omp for's barrier
      configure_tiles();
      float* acc = accs + omp_get_thread_num() * acc_per_thread;
      alignas(64) float out[32 * 32];  // row = row of C, 32 columns
#pragma omp for schedule(static)
      for (int64_t nb = 0; nb < NB; nb++) {
        const int64_t n0 = nb * 32;
        const int ni = N - n0 >= 32 ? 2 : 1;
        const uint16_t* b = B + n0 * ldb;
        for (int64_t kb0 = 0; kb0 < KB; kb0 += kKBlocksBt) {
          const int64_t kb1 = std::min(KB, kb0 + kKBlocksBt);
          for (int64_t mb = 0; mb < MB; mb += 2) {
            const int mj = MB - mb >= 2 ? 2 : 1;
            const uint16_t* pa = packed + (mb * KB + kb0) * kTileElems;
            // acc: a 32 x 32 block of Cᵀ (rows n0 .. n0 + 16 ni of B, columns the row blocks mb,
            // mb + 1 of A).
            run_tile_block(ni, mj, b + kb0 * kTileK, ldb, pa, pa + KB * kTileElems, kb1 - kb0,
                           acc + (mb / 2) * 32 * 32, 32, kb0 == 0);
          }
        }
        for (int64_t mb = 0; mb < MB; mb += 2) {
          const int mj = MB - mb >= 2 ? 2 : 1;
          const float* a = acc + (mb / 2) * 32 * 32;
          for (int i = 0; i < ni; i++) {
            for (int j = 0; j < mj; j++) {
              transpose16(a + i * 16 * 32 + j * 16, 32, out + j * 16 * 32 + i * 16, 32);
            }
          }
          const int64_t row0 = m0 + mb * kTile;
          const int64_t nrows = std::min<int64_t>(mj * kTile, M - row0);
          for (int64_t r = 0; r < nrows; r++) {
            finish_row(out + r * 32, ni * 16, alpha, bias != nullptr ? bias + n0 : nullptr,
                       accumulate, row_ptr(C, row0 + r, ldc, n0, c_bf16), c_bf16);
          }
        }
      }
      release_tiles();
    }
  }
}

// ---- not trans_b: C = A·B, B (K, N). A's rows are first-operand tiles as they lie (copied with
// zero rows to a multiple of 16 when M is not one); B is packed panel by panel (kKChunk x
// kPanelCols) into second-operand tiles, pairs of K rows interleaved.

// The panel of B rows [k0, k0 + kc), columns [n0, n0 + 16 tiles) into tiles: column block j,
// K block kb at panel + (j * KB + kb) * kTileElems; its row r holds
// (B[k0 + 32kb + 2r][n0 + 16j + c], B[k0 + 32kb + 2r + 1][n0 + 16j + c]) for c = 0 .. 15.
// B is read row by row, up to kPanelCols values of a row at a time (whole cache lines).
MAGIX_AVX512_TARGET void pack_b_panel(const uint16_t* B, int64_t ldb, int64_t kc, int64_t tiles,
                                      uint16_t* panel) {
  alignas(64) static const uint16_t kInterleave[32] = {0,  32, 1,  33, 2,  34, 3,  35, 4,  36, 5,
                                                       37, 6,  38, 7,  39, 8,  40, 9,  41, 10, 42,
                                                       11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
  const __m512i index = _mm512_load_si512(kInterleave);
  const int64_t KB = kc / kTileK;
  for (int64_t kb = 0; kb < KB; kb++) {
    for (int r = 0; r < 16; r++) {
      const uint16_t* even_row = B + (kb * kTileK + 2 * r) * ldb;
      const uint16_t* odd_row = even_row + ldb;
      for (int64_t j = 0; j < tiles; j++) {
        const __m512i even = _mm512_castsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(even_row + j * kTile)));
        const __m512i odd = _mm512_castsi256_si512(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(odd_row + j * kTile)));
        _mm512_store_si512(panel + (j * KB + kb) * kTileElems + r * 32,
                           _mm512_permutex2var_epi16(even, index, odd));
      }
    }
  }
}

void product_b(int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, const float* bias, bool accumulate, void* C,
               int64_t ldc, bool c_bf16, int threads) {
  const int64_t SB = (N + kPanelCols - 1) / kPanelCols;  // panels of kPanelCols columns
  const int64_t chunk = row_chunk(M);
  for (int64_t m0 = 0; m0 < M; m0 += chunk) {
    const int64_t rows = std::min(chunk, M - m0);
    const int64_t MB = (rows + kTile - 1) / kTile;
    const int64_t padded_rows = MB * kTile;
    // A's rows, copied with zero rows below when there are not a multiple of 16.
    const uint16_t* a = A + m0 * lda;
    int64_t a_ld = lda;
    if (padded_rows != rows) {
      uint16_t* copy = call_scratch().packed_a.get<uint16_t>(padded_rows * K, "amx_gemm_bf16");
      for (int64_t r = 0; r < rows; r++) std::memcpy(copy + r * K, a + r * lda, K * 2);
      std::memset(copy + rows * K, 0, (padded_rows - rows) * K * 2);
      a = copy;
      a_ld = K;
    }
    float* acc = call_scratch().acc.get<float>(padded_rows * N, "amx_gemm_bf16");
    uint16_t* panels =
        call_scratch().panels.get<uint16_t>(threads * kKChunk * kPanelCols, "amx_gemm_bf16");
#pragma omp parallel num_threads(threads)
    {
      configure_tiles();
      uint16_t* panel = panels + omp_get_thread_num() * kKChunk * kPanelCols;
      for (int64_t k0 = 0; k0 < K; k0 += kKChunk) {
        const int64_t kc = std::min(kKChunk, K - k0), KB = kc / kTileK;
#pragma omp for schedule(static)
        for (int64_t sb = 0; sb < SB; sb++) {
          const int64_t n_begin = sb * kPanelCols;
          const int64_t tiles = std::min(kPanelCols, N - n_begin) / kTile;
          pack_b_panel(B + k0 * ldb + n_begin, ldb, kc, tiles, panel);
          for (int64_t j = 0; j < tiles; j += 2) {
            const int nj = tiles - j >= 2 ? 2 : 1;
            const uint16_t* b0 = panel + j * KB * kTileElems;
            const uint16_t* b1 = b0 + KB * kTileElems;
            for (int64_t mb = 0; mb < MB; mb += 2) {
              const int mi = MB - mb >= 2 ? 2 : 1;
              run_tile_block(mi, nj, a + mb * kTile * a_ld + k0, a_ld, b0, b1, KB,
                             acc + mb * kTile * N + n_begin + j * kTile, N, k0 == 0);
            }
          }
        }  // the barrier: the next K chunk adds to these accumulators
      }
      release_tiles();
#pragma omp for schedule(static)
      for (int64_t r = 0; r < rows; r++) {
        finish_row(acc + r * N, N, alpha, bias, accumulate, row_ptr(C, m0 + r, ldc, 0, c_bf16),
                   c_bf16);
      }
    }
  }
}

}  // namespace

bool amx_gemm_available() {
  static const bool available = detect();
  return available;
}

bool amx_gemm_takes(bool trans_a, int64_t M, int64_t N, int64_t K) {
  return !trans_a && M > 0 && N > 0 && K > 0 && K % kTileK == 0 && N % kTile == 0 &&
         amx_gemm_available();
}

void amx_gemm_bf16(bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A,
                   int64_t lda, const uint16_t* B, int64_t ldb, const float* bias, bool accumulate,
                   void* C, int64_t ldc, bool c_bf16) {
  MAGIX_CHECK(amx_gemm_takes(false, M, N, K),
              "amx_gemm_bf16: M={} N={} K={} is not a product it takes", M, N, K);
  MAGIX_CHECK(!(c_bf16 && accumulate), "amx_gemm_bf16: a bf16 C is not accumulated into");
  const int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (trans_b) {
    product_bt(M, N, K, alpha, A, lda, B, ldb, bias, accumulate, C, ldc, c_bf16, threads);
  } else {
    product_b(M, N, K, alpha, A, lda, B, ldb, bias, accumulate, C, ldc, c_bf16, threads);
  }
}

}  // namespace magix::cpu

#else  // not x86-64: no AMX

namespace magix::cpu {

bool amx_gemm_available() {
  return false;
}

bool amx_gemm_takes(bool, int64_t, int64_t, int64_t) {
  return false;
}

void amx_gemm_bf16(bool, int64_t, int64_t, int64_t, float, const uint16_t*, int64_t,
                   const uint16_t*, int64_t, const float*, bool, void*, int64_t, bool) {
  MAGIX_FAIL("amx_gemm_bf16: the AMX kernels exist on x86-64 only");
}

}  // namespace magix::cpu

#endif
