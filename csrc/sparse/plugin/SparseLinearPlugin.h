// TensorRT plugin "SparseLinear" (version "1"): Y = X @ W^T + bias with W stored as CSR/BSR.
//
// IPluginV3 with the OneCore / OneBuild / OneRuntime capabilities and an IPluginCreatorV3One
// creator (TensorRT >= 10). Inputs, outputs and attributes are those of the ONNX node the
// trt_edge `sparsify` pass writes (csrc/sparse/spec/sparse_linear.json):
//   inputs  0 X [..., K] (FP32|FP16), 1 values (same type), 2 col_idx (INT32),
//           3 row_ptr (INT32), 4 bias [N] (same type)      -- 1..4 are constants
//   output  0 Y [..., N] (type of X)
//   fields  format ("csr"|"bsr"), block_rows, block_cols, in_features (K), out_features (N)
// TensorRT's ONNX parser maps a node whose op_type is "SparseLinear" to this creator once
// the library is loaded (IPluginRegistry::loadLibrary, which calls getCreators() below).
//
// Every noexcept entry point catches all exceptions and returns an error status (or
// nullptr); invalid attributes and shapes are reported through TensorRT's logger, never
// by exit() or abort().
#ifndef TRT_EDGE_SPARSE_LINEAR_PLUGIN_H
#define TRT_EDGE_SPARSE_LINEAR_PLUGIN_H

#include <NvInferRuntime.h>

#include <cstdint>
#include <string>
#include <vector>

namespace trt_edge {
namespace plugin {

constexpr char const* kSPARSE_LINEAR_NAME = "SparseLinear";
constexpr char const* kSPARSE_LINEAR_VERSION = "1";

// The plugin's creation state: what the attributes say and what is serialized.
struct SparseLinearParams {
  bool bsr = false;          // false: CSR
  int32_t blockRows = 1;
  int32_t blockCols = 1;
  int32_t inFeatures = 0;    // K
  int32_t outFeatures = 0;   // N
};

class SparseLinearPlugin : public nvinfer1::IPluginV3,
                           public nvinfer1::IPluginV3OneCore,
                           public nvinfer1::IPluginV3OneBuild,
                           public nvinfer1::IPluginV3OneRuntime {
 public:
  SparseLinearPlugin(SparseLinearParams const& params, std::string nameSpace);
  SparseLinearPlugin(SparseLinearPlugin const& other);
  ~SparseLinearPlugin() override = default;

  // IPluginV3
  nvinfer1::IPluginCapability* getCapabilityInterface(
      nvinfer1::PluginCapabilityType type) noexcept override;
  nvinfer1::IPluginV3* clone() noexcept override;

  // IPluginV3OneCore
  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;

  // IPluginV3OneBuild
  int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* out,
                          int32_t nbOutputs) noexcept override;
  int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
                             nvinfer1::DataType const* inputTypes,
                             int32_t nbInputs) const noexcept override;
  int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs,
                          nvinfer1::DimsExprs const* shapeInputs, int32_t nbShapeInputs,
                          nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
                          nvinfer1::IExprBuilder& exprBuilder) noexcept override;
  bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut,
                                 int32_t nbInputs, int32_t nbOutputs) noexcept override;
  int32_t getNbOutputs() const noexcept override;
  size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
                          nvinfer1::DynamicPluginTensorDesc const* outputs,
                          int32_t nbOutputs) const noexcept override;

  // IPluginV3OneRuntime
  int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs,
                        nvinfer1::PluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
  int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc,
                  nvinfer1::PluginTensorDesc const* outputDesc, void const* const* inputs,
                  void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
  nvinfer1::IPluginV3* attachToContext(nvinfer1::IPluginResourceContext* context) noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

  SparseLinearParams const& params() const { return mParams; }

 private:
  // Throws std::invalid_argument naming the problem (caught at the entry points).
  void checkIO(nvinfer1::Dims const* inputDims, int32_t nbInputs, int32_t nbOutputs) const;
  void refreshSerializationFields();

  SparseLinearParams mParams;
  std::string mNamespace;
  std::string mFormat;  // backing store of the serialized "format" field
  std::vector<nvinfer1::PluginField> mFields;
  nvinfer1::PluginFieldCollection mFieldCollection{};
};

class SparseLinearPluginCreator : public nvinfer1::IPluginCreatorV3One {
 public:
  SparseLinearPluginCreator();
  ~SparseLinearPluginCreator() override = default;

  char const* getPluginName() const noexcept override;
  char const* getPluginVersion() const noexcept override;
  char const* getPluginNamespace() const noexcept override;
  nvinfer1::PluginFieldCollection const* getFieldNames() noexcept override;
  nvinfer1::IPluginV3* createPlugin(char const* name, nvinfer1::PluginFieldCollection const* fc,
                                    nvinfer1::TensorRTPhase phase) noexcept override;

  void setPluginNamespace(char const* nameSpace) noexcept { mNamespace = nameSpace ? nameSpace : ""; }

  // Parses and validates fields; throws std::invalid_argument with a message for the user.
  static SparseLinearParams parseFields(nvinfer1::PluginFieldCollection const* fc);

 private:
  std::vector<nvinfer1::PluginField> mFieldNames;
  nvinfer1::PluginFieldCollection mFieldCollection{};
  std::string mNamespace;
};

}  // namespace plugin
}  // namespace trt_edge

#endif  // TRT_EDGE_SPARSE_LINEAR_PLUGIN_H
