// TensorRT plugin "SparseLinear" (see SparseLinearPlugin.h).
#include "SparseLinearPlugin.h"

#include "../sparse_linear.h"

#include <cstring>
#include <exception>
#include <mutex>
#include <new>
#include <sstream>
#include <stdexcept>

using namespace nvinfer1;

namespace trt_edge {
namespace plugin {
namespace {

constexpr int32_t kNB_INPUTS = 5;
constexpr int32_t kIN_X = 0, kIN_VALUES = 1, kIN_COL = 2, kIN_ROWPTR = 3, kIN_BIAS = 4;

// ---------------------------------------------------------------- logging
// TensorRT hands the library a logger finder (setLoggerFinder below); errors go there.
std::mutex gLoggerMutex;
ILoggerFinder* gLoggerFinder = nullptr;

void logError(std::string const& msg) noexcept {
  try {
    std::lock_guard<std::mutex> lock(gLoggerMutex);
    ILogger* logger = gLoggerFinder ? gLoggerFinder->findLogger() : nullptr;
    std::string const text = std::string("[trt_edge SparseLinear] ") + msg;
    if (logger) logger->log(ILogger::Severity::kERROR, text.c_str());
  } catch (...) {
    // Logging must never throw out of a noexcept entry point.
  }
}

// Runs `body`; any exception becomes a logged error and `onError`.
template <typename R, typename F>
R guarded(char const* where, R onError, F&& body) noexcept {
  try {
    return body();
  } catch (std::exception const& e) {
    logError(std::string(where) + ": " + e.what());
  } catch (...) {
    logError(std::string(where) + ": unknown exception");
  }
  return onError;
}

int64_t volume(Dims const& d, int32_t from, int32_t to) {
  int64_t v = 1;
  for (int32_t i = from; i < to; ++i) v *= d.d[i];
  return v;
}

int64_t ceilDiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

bool isFloatType(DataType t) { return t == DataType::kFLOAT || t == DataType::kHALF; }

int32_t readInt(PluginField const& f) {
  if (f.length < 1 || f.data == nullptr) throw std::invalid_argument(std::string("field '") + f.name + "' is empty");
  switch (f.type) {
    case PluginFieldType::kINT32: return *static_cast<int32_t const*>(f.data);
    case PluginFieldType::kINT64: {
      int64_t const v = *static_cast<int64_t const*>(f.data);
      if (v < INT32_MIN || v > INT32_MAX) throw std::invalid_argument(std::string("field '") + f.name + "' out of int32 range");
      return static_cast<int32_t>(v);
    }
    default: throw std::invalid_argument(std::string("field '") + f.name + "' must be an integer");
  }
}

std::string readString(PluginField const& f) {
  if (f.type != PluginFieldType::kCHAR || f.data == nullptr)
    throw std::invalid_argument(std::string("field '") + f.name + "' must be a string");
  char const* s = static_cast<char const*>(f.data);
  size_t n = f.length > 0 ? static_cast<size_t>(f.length) : std::strlen(s);
  while (n > 0 && s[n - 1] == '\0') --n;  // the parser may or may not count the NUL
  return std::string(s, n);
}

// One launch for either element type: the tensors' roles are the same, only T differs.
template <typename T>
cudaError_t launchTyped(SparseLinearParams const& p, int64_t m, void const* const* inputs,
                        void* const* outputs, cudaStream_t stream) {
  auto const* rp = static_cast<int32_t const*>(inputs[kIN_ROWPTR]);
  auto const* ci = static_cast<int32_t const*>(inputs[kIN_COL]);
  auto const* v = static_cast<T const*>(inputs[kIN_VALUES]);
  auto const* b = static_cast<T const*>(inputs[kIN_BIAS]);
  auto const* x = static_cast<T const*>(inputs[kIN_X]);
  auto* y = static_cast<T*>(outputs[0]);
  return p.bsr ? sparse::launchBsrLinear<T>(m, p.outFeatures, p.inFeatures, p.blockRows, p.blockCols, rp,
                                            ci, v, b, x, y, stream)
               : sparse::launchCsrLinear<T>(m, p.outFeatures, p.inFeatures, rp, ci, v, b, x, y, stream);
}

}  // namespace

// ================================================================ plugin
SparseLinearPlugin::SparseLinearPlugin(SparseLinearParams const& params, std::string nameSpace)
    : mParams(params), mNamespace(std::move(nameSpace)) {
  refreshSerializationFields();
}

SparseLinearPlugin::SparseLinearPlugin(SparseLinearPlugin const& other)
    : IPluginV3(), IPluginV3OneCore(), IPluginV3OneBuild(), IPluginV3OneRuntime(),
      mParams(other.mParams), mNamespace(other.mNamespace) {
  refreshSerializationFields();  // fields point into *this, never into `other`
}

void SparseLinearPlugin::refreshSerializationFields() {
  mFormat = mParams.bsr ? "bsr" : "csr";
  mFields.clear();
  mFields.emplace_back("format", mFormat.c_str(), PluginFieldType::kCHAR,
                       static_cast<int32_t>(mFormat.size() + 1));
  mFields.emplace_back("block_rows", &mParams.blockRows, PluginFieldType::kINT32, 1);
  mFields.emplace_back("block_cols", &mParams.blockCols, PluginFieldType::kINT32, 1);
  mFields.emplace_back("in_features", &mParams.inFeatures, PluginFieldType::kINT32, 1);
  mFields.emplace_back("out_features", &mParams.outFeatures, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFields.size());
  mFieldCollection.fields = mFields.data();
}

IPluginCapability* SparseLinearPlugin::getCapabilityInterface(PluginCapabilityType type) noexcept {
  switch (type) {
    case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
    case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
    case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
  }
  return nullptr;
}

IPluginV3* SparseLinearPlugin::clone() noexcept {
  return guarded<IPluginV3*>("clone", nullptr, [&] { return new SparseLinearPlugin(*this); });
}

char const* SparseLinearPlugin::getPluginName() const noexcept { return kSPARSE_LINEAR_NAME; }
char const* SparseLinearPlugin::getPluginVersion() const noexcept { return kSPARSE_LINEAR_VERSION; }
char const* SparseLinearPlugin::getPluginNamespace() const noexcept { return mNamespace.c_str(); }
int32_t SparseLinearPlugin::getNbOutputs() const noexcept { return 1; }

void SparseLinearPlugin::checkIO(Dims const* in, int32_t nbInputs, int32_t nbOutputs) const {
  if (nbInputs != kNB_INPUTS || nbOutputs != 1) {
    std::ostringstream m;
    m << "expects 5 inputs (X, values, col_idx, row_ptr, bias) and 1 output, got " << nbInputs
      << " and " << nbOutputs;
    throw std::invalid_argument(m.str());
  }
  if (!in) return;
  Dims const& x = in[kIN_X];
  if (x.nbDims < 1) throw std::invalid_argument("X must have rank >= 1");
  int64_t const k = x.d[x.nbDims - 1];
  if (k >= 0 && k != mParams.inFeatures) {
    std::ostringstream m;
    m << "X's last dimension is " << k << " but in_features is " << mParams.inFeatures;
    throw std::invalid_argument(m.str());
  }
  // The constant inputs have static shapes: check them against the attributes.
  int64_t const rows = mParams.bsr ? ceilDiv(mParams.outFeatures, mParams.blockRows) : mParams.outFeatures;
  int64_t const rp = volume(in[kIN_ROWPTR], 0, in[kIN_ROWPTR].nbDims);
  if (rp >= 0 && rp != rows + 1) {
    std::ostringstream m;
    m << "row_ptr has " << rp << " entries, expected " << rows + 1;
    throw std::invalid_argument(m.str());
  }
  int64_t const nvals = volume(in[kIN_VALUES], 0, in[kIN_VALUES].nbDims);
  int64_t const ncols = volume(in[kIN_COL], 0, in[kIN_COL].nbDims);
  int64_t const perBlock = static_cast<int64_t>(mParams.blockRows) * mParams.blockCols;
  if (nvals >= 0 && ncols >= 0 && nvals != ncols * perBlock)
    throw std::invalid_argument("values and col_idx sizes disagree with the block shape");
  int64_t const nbias = volume(in[kIN_BIAS], 0, in[kIN_BIAS].nbDims);
  if (nbias >= 0 && nbias != mParams.outFeatures)
    throw std::invalid_argument("bias must have out_features entries");
}

int32_t SparseLinearPlugin::configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs,
                                            DynamicPluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded<int32_t>("configurePlugin", -1, [&] {
    std::vector<Dims> dims;
    for (int32_t i = 0; in && i < nbInputs; ++i) dims.push_back(in[i].desc.dims);
    checkIO(dims.empty() ? nullptr : dims.data(), nbInputs, nbOutputs);
    return 0;
  });
}

int32_t SparseLinearPlugin::getOutputDataTypes(DataType* outputTypes, int32_t nbOutputs,
                                               DataType const* inputTypes, int32_t nbInputs) const noexcept {
  return guarded<int32_t>("getOutputDataTypes", -1, [&] {
    checkIO(nullptr, nbInputs, nbOutputs);
    if (!isFloatType(inputTypes[kIN_X])) throw std::invalid_argument("X must be FP32 or FP16");
    outputTypes[0] = inputTypes[kIN_X];
    return 0;
  });
}

int32_t SparseLinearPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
                                            DimsExprs const*, int32_t, DimsExprs* outputs,
                                            int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept {
  return guarded<int32_t>("getOutputShapes", -1, [&] {
    checkIO(nullptr, nbInputs, nbOutputs);
    if (inputs[kIN_X].nbDims < 1) throw std::invalid_argument("X must have rank >= 1");
    outputs[0] = inputs[kIN_X];  // dynamic leading (batch) dims pass through
    outputs[0].d[outputs[0].nbDims - 1] = exprBuilder.constant(mParams.outFeatures);
    return 0;
  });
}

bool SparseLinearPlugin::supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* inOut,
                                                   int32_t nbInputs, int32_t nbOutputs) noexcept {
  return guarded<bool>("supportsFormatCombination", false, [&] {
    if (nbInputs != kNB_INPUTS || nbOutputs != 1 || pos < 0 || pos >= kNB_INPUTS + 1) return false;
    PluginTensorDesc const& d = inOut[pos].desc;
    if (d.format != TensorFormat::kLINEAR) return false;
    switch (pos) {
      case kIN_X: return isFloatType(d.type);
      case kIN_COL:
      case kIN_ROWPTR: return d.type == DataType::kINT32;
      default: return d.type == inOut[kIN_X].desc.type;  // values, bias, Y follow X
    }
  });
}

size_t SparseLinearPlugin::getWorkspaceSize(DynamicPluginTensorDesc const*, int32_t,
                                            DynamicPluginTensorDesc const*, int32_t) const noexcept {
  return 0;
}

int32_t SparseLinearPlugin::onShapeChange(PluginTensorDesc const* in, int32_t nbInputs,
                                          PluginTensorDesc const*, int32_t nbOutputs) noexcept {
  return guarded<int32_t>("onShapeChange", -1, [&] {
    std::vector<Dims> dims;
    for (int32_t i = 0; in && i < nbInputs; ++i) dims.push_back(in[i].dims);
    checkIO(dims.empty() ? nullptr : dims.data(), nbInputs, nbOutputs);
    return 0;
  });
}

int32_t SparseLinearPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const*,
                                    void const* const* inputs, void* const* outputs, void*,
                                    cudaStream_t stream) noexcept {
  return guarded<int32_t>("enqueue", -1, [&]() -> int32_t {
    Dims const& x = inputDesc[kIN_X].dims;
    int64_t const m = volume(x, 0, x.nbDims - 1);
    cudaError_t const st = inputDesc[kIN_X].type == DataType::kHALF
                               ? launchTyped<__half>(mParams, m, inputs, outputs, stream)
                               : launchTyped<float>(mParams, m, inputs, outputs, stream);
    if (st != cudaSuccess) {
      logError(std::string("kernel launch failed: ") + cudaGetErrorString(st));
      return static_cast<int32_t>(st);
    }
    return 0;
  });
}

IPluginV3* SparseLinearPlugin::attachToContext(IPluginResourceContext*) noexcept { return clone(); }

PluginFieldCollection const* SparseLinearPlugin::getFieldsToSerialize() noexcept {
  return guarded<PluginFieldCollection const*>("getFieldsToSerialize", nullptr, [&] {
    refreshSerializationFields();
    return &mFieldCollection;
  });
}

// ================================================================ creator
SparseLinearPluginCreator::SparseLinearPluginCreator() {
  mFieldNames.emplace_back("format", nullptr, PluginFieldType::kCHAR, 0);
  mFieldNames.emplace_back("block_rows", nullptr, PluginFieldType::kINT32, 1);
  mFieldNames.emplace_back("block_cols", nullptr, PluginFieldType::kINT32, 1);
  mFieldNames.emplace_back("in_features", nullptr, PluginFieldType::kINT32, 1);
  mFieldNames.emplace_back("out_features", nullptr, PluginFieldType::kINT32, 1);
  mFieldCollection.nbFields = static_cast<int32_t>(mFieldNames.size());
  mFieldCollection.fields = mFieldNames.data();
}

char const* SparseLinearPluginCreator::getPluginName() const noexcept { return kSPARSE_LINEAR_NAME; }
char const* SparseLinearPluginCreator::getPluginVersion() const noexcept { return kSPARSE_LINEAR_VERSION; }
char const* SparseLinearPluginCreator::getPluginNamespace() const noexcept { return mNamespace.c_str(); }
PluginFieldCollection const* SparseLinearPluginCreator::getFieldNames() noexcept { return &mFieldCollection; }

SparseLinearParams SparseLinearPluginCreator::parseFields(PluginFieldCollection const* fc) {
  if (!fc) throw std::invalid_argument("no plugin fields given");
  SparseLinearParams p;
  bool haveFormat = false, haveIn = false, haveOut = false;
  for (int32_t i = 0; i < fc->nbFields; ++i) {
    PluginField const& f = fc->fields[i];
    if (!f.name) continue;
    std::string const name(f.name);
    if (name == "format") {
      std::string const v = readString(f);
      if (v != "csr" && v != "bsr") throw std::invalid_argument("format must be 'csr' or 'bsr', got '" + v + "'");
      p.bsr = v == "bsr";
      haveFormat = true;
    } else if (name == "block_rows") {
      p.blockRows = readInt(f);
    } else if (name == "block_cols") {
      p.blockCols = readInt(f);
    } else if (name == "in_features") {
      p.inFeatures = readInt(f);
      haveIn = true;
    } else if (name == "out_features") {
      p.outFeatures = readInt(f);
      haveOut = true;
    }  // other fields (plugin_version, plugin_namespace from the parser) are ignored
  }
  if (!haveFormat || !haveIn || !haveOut)
    throw std::invalid_argument("fields format, in_features and out_features are required");
  if (p.inFeatures < 0 || p.outFeatures < 0)
    throw std::invalid_argument("in_features and out_features must be >= 0");
  if (!p.bsr) {
    p.blockRows = p.blockCols = 1;
  } else if (!sparse::isSupportedBlock(p.blockRows, p.blockCols)) {
    std::ostringstream m;
    m << "BSR block " << p.blockRows << "x" << p.blockCols
      << " has no CUDA kernel; use 1x4, 1x8, 2x2, 2x4, 4x1, 4x4 or 8x1 (or CSR)";
    throw std::invalid_argument(m.str());
  }
  return p;
}

IPluginV3* SparseLinearPluginCreator::createPlugin(char const*, PluginFieldCollection const* fc,
                                                   TensorRTPhase) noexcept {
  // Build phase: fields come from the ONNX node's attributes; runtime phase: from
  // getFieldsToSerialize(). Both are validated the same way.
  return guarded<IPluginV3*>("createPlugin", nullptr, [&]() -> IPluginV3* {
    return new SparseLinearPlugin(parseFields(fc), mNamespace);
  });
}

}  // namespace plugin
}  // namespace trt_edge

// ================================================================ library entry points
// IPluginRegistry::loadLibrary() (trtexec --dynamicPlugins, tensorrt.get_plugin_registry()
// .load_library) looks these up; they must not throw.
extern "C" {

__attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) noexcept {
  std::lock_guard<std::mutex> lock(trt_edge::plugin::gLoggerMutex);
  trt_edge::plugin::gLoggerFinder = finder;
}

__attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) noexcept {
  static trt_edge::plugin::SparseLinearPluginCreator creator;
  static nvinfer1::IPluginCreatorInterface* const creators[] = {&creator};
  nbCreators = 1;
  return creators;
}

}  // extern "C"

#ifdef TRT_EDGE_SPARSE_STATIC_REGISTRATION
// For applications that dlopen/link the library without loadLibrary(): register at load
// time. Off by default (loadLibrary would then register the creator a second time).
REGISTER_TENSORRT_PLUGIN(trt_edge::plugin::SparseLinearPluginCreator);
#endif
