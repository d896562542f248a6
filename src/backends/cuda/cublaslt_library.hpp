// cuBLASLt, loaded with dlopen when the CUDA backend is first created rather than linked: the
// library is 540 MB, and linking it costs every magix process (CPU-only runs, the CLI, each MPI
// rank) about 0.1 s and 210 MB of resident pages at start-up. The table holds the few functions
// gemm.cpp calls, with the header's own types.
#pragma once

#include <cublasLt.h>

#include <string>

namespace magix::cuda {

struct CublasLtApi {
  decltype(&::cublasLtCreate) create;
  decltype(&::cublasLtDestroy) destroy;
  decltype(&::cublasLtGetVersion) get_version;
  decltype(&::cublasLtGetStatusName) status_name;
  decltype(&::cublasLtGetStatusString) status_string;
  decltype(&::cublasLtMatmulDescCreate) desc_create;
  decltype(&::cublasLtMatmulDescDestroy) desc_destroy;
  decltype(&::cublasLtMatmulDescSetAttribute) desc_set;
  decltype(&::cublasLtMatrixLayoutCreate) layout_create;
  decltype(&::cublasLtMatrixLayoutDestroy) layout_destroy;
  decltype(&::cublasLtMatmulPreferenceCreate) pref_create;
  decltype(&::cublasLtMatmulPreferenceDestroy) pref_destroy;
  decltype(&::cublasLtMatmulPreferenceSetAttribute) pref_set;
  decltype(&::cublasLtMatmulAlgoGetHeuristic) heuristic;
  decltype(&::cublasLtMatmul) matmul;
  std::string path;  // the file loaded
};

// Loads libcublasLt.so.<major of the headers> (from the library path, then the toolkit's folder
// found at configure time) once per process; throws magix::Error listing what was tried.
const CublasLtApi& cublaslt();

}  // namespace magix::cuda
