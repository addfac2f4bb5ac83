"""A test double of the `tensorrt` module. It is NOT TensorRT: it builds nothing that can run.

It implements just the builder calls edge/tensorrt_engine.py makes, so tests can check what
edge asks TensorRT to do without NVIDIA's libraries or a GPU. Like TensorRT's ONNX parser it
reads the real ONNX file (here with the `onnx` package) for the input's name, shape and type
and for layer names and types, and like TensorRT it refuses a build whose dynamic input has no
valid profile. `build_serialized_network` returns a fake plan: JSON bytes recording the build
(network flags, builder flags, memory pool limits, profile shapes, layers pinned to fp32, the
timing cache it was given), which tests read back with `json.loads`. The runtime half
(Runtime, engines, contexts) is left out: running needs a GPU, and the GPU tests use the real
TensorRT.

Install it per test with `monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt)`; change
the knobs below with `monkeypatch.setattr`.
"""

import enum
import json

import onnx
from onnx import TensorProto, shape_inference

__edge_test_double__ = True
__version__ = "10.3.0"
UNSUPPORTED_OPS = frozenset()  # op types the parser refuses, as TensorRT refuses ops it lacks
BUILD_ERROR = None  # a message the build fails with, as when TensorRT runs out of memory


class DataType(enum.Enum):
    FLOAT = "float32"
    HALF = "float16"
    INT8 = "int8"
    INT32 = "int32"
    INT64 = "int64"
    UINT8 = "uint8"
    BOOL = "bool"


float32, float16, int8, int32, int64, uint8 = (DataType.FLOAT, DataType.HALF, DataType.INT8, DataType.INT32,
                                              DataType.INT64, DataType.UINT8)
ONNX_TYPES = {TensorProto.FLOAT: DataType.FLOAT, TensorProto.FLOAT16: DataType.HALF, TensorProto.INT8: DataType.INT8,
              TensorProto.INT32: DataType.INT32, TensorProto.INT64: DataType.INT64, TensorProto.UINT8: DataType.UINT8,
              TensorProto.BOOL: DataType.BOOL}


class ILogger:
    class Severity(enum.Enum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    def __init__(self):
        pass

    def log(self, severity, msg):
        raise NotImplementedError("a logger given to TensorRT implements log()")


class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class BuilderFlag(enum.Enum):
    FP16 = 0
    OBEY_PRECISION_CONSTRAINTS = 1
    TF32 = 2


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class ITensor:
    def __init__(self, name: str, shape: tuple, dtype: DataType):
        self.name, self.shape, self.dtype = name, shape, dtype


class ILayer:
    def __init__(self, name: str, op: str, inputs: list, outputs: list):
        self.name, self.type = name, op
        self._inputs, self._outputs = inputs, outputs
        self.precision_set = None
        self.output_types = {}

    @property
    def num_inputs(self):
        return len(self._inputs)

    @property
    def num_outputs(self):
        return len(self._outputs)

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    @property
    def precision(self):
        return self.precision_set or DataType.FLOAT

    @precision.setter
    def precision(self, dtype):
        self.precision_set = dtype

    def set_output_type(self, index, dtype):
        if not 0 <= index < len(self._outputs):
            raise IndexError(f"layer {self.name} has no output {index}")
        self.output_types[index] = dtype


class INetworkDefinition:
    def __init__(self, flags: int):
        self.flags = flags
        self.inputs, self.layers = [], []
        self.parsed_path = None

    @property
    def num_inputs(self):
        return len(self.inputs)

    def get_input(self, index):
        return self.inputs[index]

    @property
    def num_layers(self):
        return len(self.layers)

    def get_layer(self, index):
        return self.layers[index]


class ParserError:
    def __init__(self, node: int, name: str, op: str, desc: str):
        self.node, self.name, self.op, self.text = node, name, op, desc

    def desc(self):
        return self.text

    def __str__(self):  # TensorRT 10's form, over two lines as TensorRT's can be
        return f"In node {self.node} with name: {self.name} and operator: {self.op}\n{self.text}"


class OnnxParser:
    def __init__(self, network: INetworkDefinition, logger: ILogger):
        self.network, self.logger = network, logger
        self.errors = []

    @property
    def num_errors(self):
        return len(self.errors)

    def get_error(self, index):
        return self.errors[index]

    def parse(self, model, path=None) -> bool:
        self.network.parsed_path = path
        try:
            proto = shape_inference.infer_shapes(onnx.load_from_string(bytes(model)))
        except Exception as err:  # protobuf and onnx raise several kinds
            self.errors.append(ParserError(-1, "", "", f"MODEL_DESERIALIZE_FAILED: Failed to parse ONNX model ({err})"))
            return False
        graph = proto.graph
        types = {init.name: init.data_type for init in graph.initializer}
        for value in [*graph.input, *graph.value_info, *graph.output]:
            types[value.name] = value.type.tensor_type.elem_type

        def tensor(name):
            return ITensor(name, (), ONNX_TYPES.get(types.get(name), DataType.FLOAT)) if name else None

        initialized = {init.name for init in graph.initializer}
        for value in graph.input:
            if value.name not in initialized:
                dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim)
                self.network.inputs.append(ITensor(value.name, dims, ONNX_TYPES[types[value.name]]))
        for index, node in enumerate(graph.node):
            name = node.name or f"node_of_{node.output[0]}"
            if node.op_type in UNSUPPORTED_OPS:
                self.errors.append(ParserError(index, name, node.op_type,
                                               f"UNSUPPORTED_NODE: No importer registered for op: {node.op_type}"))
                return False
            self.network.layers.append(ILayer(name, node.op_type, [tensor(n) for n in node.input],
                                              [tensor(n) for n in node.output]))
        return True


class ITimingCache:
    def __init__(self, builds: int | None):
        self.loaded_builds = builds  # None: created empty
        self.builds = builds or 0

    def serialize(self):
        return memoryview(json.dumps({"fake_timing_cache_builds": self.builds}).encode())


class IOptimizationProfile:
    def __init__(self):
        self.shapes = {}

    def set_shape(self, input, min, opt, max):
        self.shapes[input] = [list(min), list(opt), list(max)]


class IBuilderConfig:
    def __init__(self):
        self.flags = set()
        self.memory_pool_limits = {}
        self.profiles = []
        self.timing_cache, self.ignore_mismatch = None, None

    def set_flag(self, flag):
        self.flags.add(flag)

    def set_memory_pool_limit(self, pool, size):
        self.memory_pool_limits[pool] = size

    def add_optimization_profile(self, profile):
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, serialized):
        data = bytes(serialized)
        if not data:
            return ITimingCache(None)
        try:
            return ITimingCache(json.loads(data)["fake_timing_cache_builds"])
        except (ValueError, KeyError, TypeError):
            return None  # as TensorRT: a blob it cannot read gives no cache

    def set_timing_cache(self, cache, ignore_mismatch):
        self.timing_cache, self.ignore_mismatch = cache, ignore_mismatch
        return True

    def get_timing_cache(self):
        return self.timing_cache


class Builder:
    def __init__(self, logger: ILogger):
        self.logger = logger

    def create_network(self, flags=0):
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig()

    def create_optimization_profile(self):
        return IOptimizationProfile()

    def build_serialized_network(self, network: INetworkDefinition, config: IBuilderConfig):
        problem = BUILD_ERROR or _profile_problem(network, config)
        if problem:
            self.logger.log(ILogger.Severity.ERROR, problem)
            return None
        if config.timing_cache is not None:
            config.timing_cache.builds += 1
        plan = {
            "fake_tensorrt_plan": True,
            "network_flags": network.flags,
            "parsed_path": network.parsed_path,
            "inputs": {t.name: {"shape": list(t.shape), "dtype": t.dtype.value} for t in network.inputs},
            "builder_flags": sorted(flag.name for flag in config.flags),
            "memory_pool_limits": {pool.name: size for pool, size in config.memory_pool_limits.items()},
            "profiles": [p.shapes for p in config.profiles],
            "fp32_layers": {layer.name: {"precision": layer.precision_set.value,
                                         "output_types": {str(i): t.value for i, t in layer.output_types.items()}}
                            for layer in network.layers if layer.precision_set or layer.output_types},
            "timing_cache": None if config.timing_cache is None else {
                "loaded_builds": config.timing_cache.loaded_builds, "ignore_mismatch": config.ignore_mismatch},
        }
        return memoryview(json.dumps(plan).encode())  # TensorRT returns a buffer (IHostMemory)


def _profile_problem(network: INetworkDefinition, config: IBuilderConfig) -> str | None:
    """What TensorRT would refuse about the network's dynamic inputs and the profiles, if anything."""
    explicit_flag = 1 << NetworkDefinitionCreationFlag.EXPLICIT_BATCH
    explicit = int(__version__.split(".")[0]) >= 10 or network.flags & explicit_flag
    if not explicit:
        return "Network has dynamic or shape inputs, but no optimization profile has been defined (implicit batch)"
    for tensor in network.inputs:
        if -1 not in tensor.shape:
            continue
        if not config.profiles or tensor.name not in config.profiles[0].shapes:
            return f"Network has dynamic or shape inputs, but no optimization profile defines {tensor.name}"
        low, opt, high = config.profiles[0].shapes[tensor.name]
        for dims in (low, opt, high):
            if len(dims) != len(tensor.shape) or any(d != s for d, s in zip(dims, tensor.shape) if s != -1):
                return f"IOptimizationProfile::setDimensions: {tensor.name} dims {dims} do not fit {list(tensor.shape)}"
        if not all(a <= b <= c for a, b, c in zip(low, opt, high)):
            return f"IOptimizationProfile::setDimensions: {tensor.name} needs min <= opt <= max"
    return None
