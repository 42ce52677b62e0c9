// parse_safetensors (csrc/train/safetensors_format.h): the checks every load relies on, each
// damaged or hostile header one std::invalid_argument naming the file and the tensor.
#include <gtest/gtest.h>

#include <cstring>
#include <string>

#include "csrc/train/safetensors_format.h"

namespace {

using ts::train::parse_safetensors;

std::string file(const std::string& header, size_t data_bytes) {
  std::string out(8, '\0');
  const uint64_t n = header.size();
  std::memcpy(out.data(), &n, 8);
  return out + header + std::string(data_bytes, '\x7f');
}

void expect_error(const std::string& bytes, const std::string& needle) {
  try {
    parse_safetensors(bytes, "f.safetensors");
    FAIL() << "accepted; expected an error containing: " << needle;
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("f.safetensors"), std::string::npos) << e.what();
  }
}

TEST(Safetensors, ParsesAWellFormedFile) {
  const auto h = parse_safetensors(
      file(R"({"__metadata__":{"format":"pt"},"b":{"dtype":"I64","shape":[2],"data_offsets":[0,16]},)"
           R"("w":{"dtype":"F32","shape":[2,3],"data_offsets":[16,40]},"e":{"dtype":"BF16","shape":[0,4],)"
           R"("data_offsets":[40,40]}})",
           40),
      "f");
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.metadata.at("format"), "pt");
  const auto& w = h.tensors[2].name == "w" ? h.tensors[2] : h.tensors[1];
  EXPECT_EQ(w.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(w.end - w.begin, 24u);
}

TEST(Safetensors, RefusesDamagedOrHostileHeaders) {
  expect_error("abc", "shorter than the 8-byte header size");
  expect_error(file("{}", 0).substr(0, 9), "runs past the end of the file");
  expect_error(file("[1, 2]", 0), "not a JSON object");
  expect_error(file("{\"a\": ", 0), "not a JSON object");
  expect_error(file(R"({"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,1]}})", 1), "tensor 'a': unknown dtype 'Q9'");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4), "tensor 'a': a dimension");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 8),
               "4 bytes of data for a shape of 8");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})", 8), "outside the 8 bytes of data");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8), "outside");
  expect_error(file(R"({"a":{"dtype":"F64","shape":[4294967296,4294967296],"data_offsets":[0,8]}})", 8), "overflows");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                    R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
                    8),
               "overlap");
  expect_error(file(R"({"__metadata__":{"k":1}})", 0), "__metadata__ 'k' is not a string");
  expect_error(file(R"({"a":{"dtype":"F32","shape":[1]}})", 4), "data_offsets is not a pair");
}

}  // namespace
