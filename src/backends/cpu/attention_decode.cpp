#include "backends/cpu/attention_decode.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "backends/cpu/vec_math.hpp"
#include "magix/dtype_convert.hpp"

namespace magix::cpu {

void attention_decode(float* out, const float* q, const KvView& c, int64_t B, int64_t slot,
                      int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window,
                      float softcap) {
  const int64_t group = Hq / Hkv;
  const int64_t lo = window > 0 ? std::max<int64_t>(0, slot - window + 1) : 0;
#pragma omp parallel if (B * Hq * (slot - lo + 1) * D > (1 << 15))
  {
    std::vector<float> s(static_cast<size_t>(slot - lo + 1));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < Hq; ++h) {
        const float* qh = q + (b * Hq + h) * D;
        const int64_t kvh = h / group;
        const int32_t* valid = c.valid + b * c.S;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = lo; j <= slot; ++j) {
          float dot = -std::numeric_limits<float>::infinity();
          if (valid[j % c.S]) {
            const float* kj = c.k + ((b * c.S + j % c.S) * Hkv + kvh) * D;
            dot = 0;
            for (int64_t d = 0; d < D; ++d) dot += qh[d] * kj[d];
            dot *= scale;
            if (softcap > 0) dot = std::tanh(dot / softcap) * softcap;
          }
          s[j - lo] = dot;
          mx = std::max(mx, dot);
        }
        float* o = out + (b * Hq + h) * D;
        std::fill(o, o + D, 0.0f);
        if (mx == -std::numeric_limits<float>::infinity()) continue;
        float sum = 0;
        for (int64_t j = lo; j <= slot; ++j) {
          const float p = valid[j % c.S] ? std::exp(s[j - lo] - mx) : 0.0f;
          s[j - lo] = p;
          sum += p;
        }
        const float inv = 1.0f / sum;
        for (int64_t j = lo; j <= slot; ++j) {
          if (s[j - lo] == 0.0f) continue;
          const float p = s[j - lo] * inv;
          const float* vj = c.v + ((b * c.S + j % c.S) * Hkv + kvh) * D;
          for (int64_t d = 0; d < D; ++d) o[d] += p * vj[d];
        }
      }
    }
  }
}

void attention_decode(float* out, const float* q, const KvViewBf16& c, int64_t B, int64_t slot,
                      int64_t Hq, int64_t Hkv, int64_t D, float scale, int64_t window,
                      float softcap) {
  const int64_t group = Hq / Hkv;
  const int64_t lo = window > 0 ? std::max<int64_t>(0, slot - window + 1) : 0;
  const int64_t D8 = D / 8 * 8;
#pragma omp parallel if (B * Hq * (slot - lo + 1) * D > (1 << 15))
  {
    std::vector<float> s(static_cast<size_t>(slot - lo + 1));
#pragma omp for collapse(2) schedule(static)
    for (int64_t b = 0; b < B; ++b) {
      for (int64_t h = 0; h < Hq; ++h) {
        const float* qh = q + (b * Hq + h) * D;
        const int64_t kvh = h / group;
        const int32_t* valid = c.valid + b * c.S;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = lo; j <= slot; ++j) {
          float dot = -std::numeric_limits<float>::infinity();
          if (valid[j % c.S]) {
            const uint16_t* kj = c.k + ((b * c.S + j % c.S) * Hkv + kvh) * D;
            vec::F8 acc{};
            int64_t d = 0;
            for (; d < D8; d += 8) acc += vec::load(qh + d) * vec::load_bf16(kj + d);
            dot = vec::sum(acc);
            for (; d < D; ++d) dot += qh[d] * bf16_to_float(kj[d]);
            dot *= scale;
            if (softcap > 0) dot = std::tanh(dot / softcap) * softcap;
          }
          s[j - lo] = dot;
          mx = std::max(mx, dot);
        }
        float* o = out + (b * Hq + h) * D;
        std::fill(o, o + D, 0.0f);
        if (mx == -std::numeric_limits<float>::infinity()) continue;
        float sum = 0;
        for (int64_t j = lo; j <= slot; ++j) {
          const float p = valid[j % c.S] ? std::exp(s[j - lo] - mx) : 0.0f;
          s[j - lo] = p;
          sum += p;
        }
        const float inv = 1.0f / sum;
        for (int64_t j = lo; j <= slot; ++j) {
          if (s[j - lo] == 0.0f) continue;
          const float p = s[j - lo] * inv;
          const uint16_t* vj = c.v + ((b * c.S + j % c.S) * Hkv + kvh) * D;
          int64_t d = 0;
          for (; d < D8; d += 8) vec::store(o + d, vec::load(o + d) + p * vec::load_bf16(vj + d));
          for (; d < D; ++d) o[d] += p * bf16_to_float(vj[d]);
        }
      }
    }
  }
}

}  // namespace magix::cpu
