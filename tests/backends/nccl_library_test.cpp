// NCCL's loader (src/backends/cuda/nccl_library.cpp), no GPU needed: the files it tries and
// their order ($MAGIX_NCCL_LIBRARY first), this machine's libnccl.so.2 loading with every
// function of the table and the version of the header it was built with, and a missing library
// reported with the file tried and dlopen's reason (what the fallback to host staging says).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "backends/cuda/nccl_library.hpp"

namespace magix::cuda {
namespace {

TEST(NcclLibrary, CandidatesTryMagixNcclLibraryFirst) {
  std::map<std::string, std::string> env;
  auto getenv = [&env](const char* name) -> const char* {
    auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  std::vector<std::string> plain = nccl_candidates(getenv);
  ASSERT_GE(plain.size(), 1u);
  EXPECT_EQ(plain[0], "libnccl.so.2");
  for (size_t i = 1; i < plain.size(); ++i) {
    EXPECT_NE(plain[i].find("/libnccl.so.2"), std::string::npos) << plain[i];
  }
  env["MAGIX_NCCL_LIBRARY"] = "/opt/torch/nvidia/nccl/lib/libnccl.so.2";
  std::vector<std::string> with = nccl_candidates(getenv);
  ASSERT_EQ(with.size(), plain.size() + 1);
  EXPECT_EQ(with[0], "/opt/torch/nvidia/nccl/lib/libnccl.so.2");
  EXPECT_EQ(std::vector<std::string>(with.begin() + 1, with.end()), plain);
}

TEST(NcclLibrary, LoadsThisMachinesNccl) {
  std::string why;
  const std::optional<NcclApi> api =
      load_nccl(nccl_candidates([](const char*) -> const char* { return nullptr; }), &why);
  if (!api) GTEST_SKIP() << "no NCCL on this machine: " << why;
  EXPECT_EQ(api->version / 10000, NCCL_MAJOR) << api->path;
  EXPECT_GE(api->version, 21300) << api->path;
  EXPECT_STREQ(api->error_string(ncclSuccess), "no error");
  RecordProperty("nccl", api->path + " " + std::to_string(api->version));
}

TEST(NcclLibrary, MissingLibraryIsReportedWithWhatWasTried) {
  std::string why;
  EXPECT_FALSE(load_nccl({"/nonexistent/libnccl.so.2"}, &why).has_value());
  EXPECT_NE(why.find("NCCL 2 cannot be loaded"), std::string::npos) << why;
  EXPECT_NE(why.find("/nonexistent/libnccl.so.2: "), std::string::npos) << why;
  // A library that is not NCCL: its missing functions are named.
  why.clear();
  EXPECT_FALSE(load_nccl({"libm.so.6"}, &why).has_value());
  EXPECT_NE(why.find("libm.so.6: no symbol ncclGetVersion"), std::string::npos) << why;
}

}  // namespace
}  // namespace magix::cuda
