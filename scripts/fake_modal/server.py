"""A fake Modal control plane that the real `modal` client (1.6.4) talks to, offline, on 127.0.0.1.

Modal's cloud cannot be reached from tests, so this grpclib server stands in for it. The servicer
subclasses `modal_proto.api_grpc.ModalClientBase` and is decorated with
`modal._utils.grpc_testing.patch_mock_servicer`, the way Modal's own repo tests its client
(`MockClientServicer` in modal-labs/modal-client `test/conftest.py`): every RPC not implemented here
fails with UNIMPLEMENTED and names itself, instead of hanging or answering wrongly.

Deployed functions are registered on the command line as `APP/NAME=module:attr`. Each spawned call
waits `--delay` seconds (a stand-in for scheduling and GPU start-up), then runs the callable with the
call's arguments in a worker thread: `.local(...)` for a `modal.Function` defined with
`@app.function()`, a plain call otherwise. Results and exceptions are serialized the way a Modal
container reports them, so the client's `FunctionCall.get()` returns the value or re-raises the
remote exception with its type and message. Retry policies and timeouts passed through
`with_options()` are honoured as Modal's backend does. Named `modal.Dict`s live in memory (see
`_dict_rpcs`), and the bodies' own modal client is pointed at this plane (as a container's client is
at Modal's), so a body that publishes to a Dict is read by the client of a test or an Airflow trigger.

Every observable event is appended as one JSON line to `--events-file` (see `EventLog`), and the bound
port is written to `--ready-file` once the server listens. Faults for tests go through a small HTTP
control endpoint (its base URL is written to `--control-file`): `POST /faults/preempt/{call_id}` stops
the call's running input and starts it again, as Modal does after a preemption (see `preemption.py`).

Run it from the repo root: `python -m scripts.fake_modal.server APP/NAME=module:attr ... --port 0
--events-file events.jsonl --ready-file ready.txt` (or `python scripts/fake_modal/server.py ...`).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

# Only 127.0.0.1: this is a test double, never a service.
HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORKERS = 128


class EventLog:
    """Appends one JSON object per line to a file and flushes after each, so readers see events live.

    Event types:
      - `spawn`: `app`, `function`, `function_id`, `call_id`, `gpu` (e.g. "H100", "H100:2" or null),
        `timeout` (seconds or null), `retries` (max retries or null), `kwargs_keys`, `num_args`, `t`.
      - `retry`: `call_id`, `attempt` (1 for the first retry), `error`, `t`.
      - `preempted`: `call_id`, `t` (the input was stopped and starts again; not a retry).
      - `cancel`: `call_id`, `terminate_containers`, `t`.
      - `finished`: `call_id`, `status` ("success" | "failure" | "cancelled"), `t`, and for failures
        `error` (repr of the exception, or "timeout").
      - `dict_put`: `dict` (its name), `keys` (how many entries were written), `t`.
    """

    def __init__(self, path: Path | None):
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8") if path else None

    def write(self, event: dict[str, Any]) -> None:
        event.setdefault("t", time.time())
        line = json.dumps(event, sort_keys=False)
        with self._lock:
            if self._file is not None:
                self._file.write(line + "\n")
                self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None


@dataclasses.dataclass
class FunctionVariant:
    """A deployed function, or a variant of one bound by `with_options()` (FunctionBindParams)."""

    function_id: str
    app: str
    name: str
    target: Callable[..., Any]
    base_function_id: str = ""
    gpu: str | None = None
    timeout: int | None = None
    retry_policy: Any = None  # api_pb2.FunctionRetryPolicy | None


@dataclasses.dataclass
class Call:
    """One spawned (or `.remote()`) call: a single input, its eventual output, and its status."""

    call_id: str
    function: FunctionVariant
    input_id: str = ""
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    output: Any = None  # api_pb2.FunctionGetOutputsItem once done
    cancelled: bool = False
    task: asyncio.Task | None = None


def parse_function_spec(spec: str) -> tuple[str, str, str]:
    """`APP/NAME=module:attr` -> (app, name, "module:attr"), with a message that says what is wrong."""
    left, sep, target = spec.partition("=")
    app, slash, name = left.partition("/")
    module, colon, attr = target.partition(":")
    if not (sep and slash and colon and app and name and module and attr):
        raise ValueError(
            f"Bad function spec {spec!r}: expected APP/NAME=module:attr, e.g. my-app/train=pkg.mod:train"
        )
    return app, name, target


def resolve_target(target: str) -> Callable[..., Any]:
    """Import `module:attr` (attr may be dotted) and return the callable."""
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split("."):
        obj = getattr(obj, part)
    import modal

    if not (callable(obj) or isinstance(obj, modal.Function)):
        raise TypeError(f"{target} is not callable (got {type(obj).__name__})")
    return obj


def invoke(target: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
    """Run one input in a worker thread, as the container would run the function body."""
    import modal

    if isinstance(target, modal.Function):
        return target.local(*args, **kwargs)
    return target(*args, **kwargs)


def _fake_jwt(claims: dict[str, Any]) -> str:
    """An unsigned JWT: the client only base64-decodes the payload to read `exp`."""

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{b64(json.dumps(claims).encode())}.fake"


def _build_servicer_class():
    """Build the servicer class (imports modal lazily so `--help` and spec errors stay fast)."""
    from google.protobuf.empty_pb2 import Empty
    from grpclib import GRPCError, Status
    from modal._serialization import (
        deserialize_data_format,
        pickle_exception,
        pickle_traceback,
        serialize_data_format,
    )
    from modal._utils.blob_utils import MAX_OBJECT_SIZE_BYTES
    from modal._utils.grpc_testing import patch_mock_servicer
    from modal.retries import RetryManager
    from modal_proto import api_grpc, api_pb2

    from scripts.fake_modal.preemption import Preempted, Preemptions

    @patch_mock_servicer
    class FakeModalServicer(_dict_rpcs(api_pb2, GRPCError, Status), api_grpc.ModalClientBase):
        """Implements the RPCs that `Function.from_name/with_options/spawn/remote` and `FunctionCall
        .from_id/get/cancel` use in modal 1.6.4 (plus blob storage for large payloads)."""

        def __init__(
            self,
            functions: dict[tuple[str, str], Callable[..., Any]],
            *,
            events: EventLog,
            delay: float = 0.0,
            workers: int = DEFAULT_WORKERS,
            credentials: tuple[str, str] | None = None,
        ):
            self.events = events
            self.delay = delay
            self.credentials = credentials
            self.executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=workers, thread_name_prefix="fake-fn"
            )
            self._ids = itertools.count(1)
            self.functions: dict[str, FunctionVariant] = {}
            self.by_name: dict[tuple[str, str], FunctionVariant] = {}
            self.bound: dict[tuple[str, bytes], str] = {}
            self.calls: dict[str, Call] = {}
            self.blobs: dict[str, bytes] = {}
            self.blob_url_base = ""  # set once the blob HTTP server listens
            self.preemptions = Preemptions()
            for (app, name), target in functions.items():
                fn = FunctionVariant(function_id=self._new_id("fu"), app=app, name=name, target=target)
                fn.base_function_id = fn.function_id
                self.functions[fn.function_id] = fn
                self.by_name[(app, name)] = fn

        # ---- helpers (lower-case: patch_mock_servicer only wraps the capitalised RPC methods) ----

        def _new_id(self, prefix: str) -> str:
            return f"{prefix}-{next(self._ids):04d}{uuid.uuid4().hex[:20]}"

        async def recv_request(self, event) -> None:
            """Auth check on every request, as the real control plane does (grpclib RecvRequest)."""
            md = event.metadata
            if md.get("x-modal-client-type") != str(api_pb2.CLIENT_TYPE_CLIENT):
                raise GRPCError(
                    Status.FAILED_PRECONDITION, "fake Modal control plane only serves CLIENT clients"
                )
            token_id, token_secret = md.get("x-modal-token-id"), md.get("x-modal-token-secret")
            if not token_id or not token_secret:
                raise GRPCError(Status.UNAUTHENTICATED, f"No credentials for method {event.method_name}")
            if self.credentials and (token_id, token_secret) != self.credentials:
                raise GRPCError(
                    Status.UNAUTHENTICATED, f"Invalid token {token_id!r} for method {event.method_name}"
                )

        def _handle_metadata(self, fn: FunctionVariant) -> Any:
            return api_pb2.FunctionHandleMetadata(
                function_name=fn.name,
                function_type=api_pb2.Function.FUNCTION_TYPE_FUNCTION,
                definition_id=f"de-{fn.base_function_id}",
                app_id=f"ap-{fn.app}",
                base_function_id=fn.base_function_id,
                supported_input_formats=[api_pb2.DATA_FORMAT_PICKLE],
                supported_output_formats=[api_pb2.DATA_FORMAT_PICKLE],
            )

        def _function_data(self, fn: FunctionVariant) -> Any:
            function = api_pb2.Function(
                function_name=fn.name, module_name=fn.app, timeout_secs=fn.timeout or 300
            )
            return api_pb2.FunctionData(
                function_name=fn.name,
                module_name=fn.app,
                timeout_secs=fn.timeout or 300,
                ranked_functions=[api_pb2.FunctionData.RankedFunction(rank=0, function=function)],
            )

        def _get_function(self, function_id: str) -> FunctionVariant:
            fn = self.functions.get(function_id)
            if fn is None:
                raise GRPCError(Status.NOT_FOUND, f"Function {function_id!r} not found")
            return fn

        def _get_call(self, call_id: str) -> Call:
            call = self.calls.get(call_id)
            if call is None:
                raise GRPCError(Status.NOT_FOUND, f"Function call {call_id!r} not found")
            return call

        async def _read_blob_or_inline(self, data: bytes, blob_id: str) -> bytes:
            if blob_id:
                if blob_id not in self.blobs:
                    raise GRPCError(Status.INVALID_ARGUMENT, f"Blob {blob_id!r} was never uploaded")
                return self.blobs[blob_id]
            return data

        async def _start_call(self, call: Call, item: Any) -> Any:
            """Decode one FunctionPutInputsItem, record the spawn and schedule the run."""
            fn_input = item.input
            payload = await self._read_blob_or_inline(fn_input.args, fn_input.args_blob_id)
            data_format = fn_input.data_format or api_pb2.DATA_FORMAT_PICKLE
            try:
                args, kwargs = deserialize_data_format(payload, data_format, None)
            except Exception as exc:
                raise GRPCError(Status.INVALID_ARGUMENT, f"Could not decode function input: {exc!r}") from exc
            call.input_id = self._new_id("in")
            fn = call.function
            self.events.write(
                {
                    "type": "spawn",
                    "app": fn.app,
                    "function": fn.name,
                    "function_id": fn.function_id,
                    "call_id": call.call_id,
                    "gpu": fn.gpu,
                    "timeout": fn.timeout,
                    "retries": fn.retry_policy.retries if fn.retry_policy is not None else None,
                    "kwargs_keys": sorted(kwargs),
                    "num_args": len(args),
                    "t": time.time(),
                }
            )
            call.task = asyncio.get_running_loop().create_task(
                self._run_call(call, tuple(args), dict(kwargs))
            )
            return api_pb2.FunctionPutInputsResponseItem(
                idx=item.idx, input_id=call.input_id, input_jwt=_fake_jwt({"input_id": call.input_id})
            )

        async def _run_call(self, call: Call, args: tuple, kwargs: dict) -> None:
            fn = call.function
            try:
                if self.delay > 0:
                    await asyncio.sleep(self.delay)
                attempt = 0
                while True:
                    status, result, error = await self._attempt(call, args, kwargs)
                    if status == "preempted":  # Modal restarts a preempted input; it is not a retry
                        self.events.write({"type": "preempted", "call_id": call.call_id})
                        continue
                    if status == "success" or fn.retry_policy is None or attempt >= fn.retry_policy.retries:
                        break
                    attempt += 1
                    self.events.write(
                        {"type": "retry", "call_id": call.call_id, "attempt": attempt, "error": error}
                    )
                    delay_ms = RetryManager._retry_delay_ms(attempt, fn.retry_policy)  # >= 1 s, as in Modal
                    if fn.retry_policy.max_delay_ms > 0:
                        delay_ms = min(delay_ms, max(fn.retry_policy.max_delay_ms, 1000))
                    await asyncio.sleep(delay_ms / 1000)
                self._finish(call, result, status, error)
            except asyncio.CancelledError:
                pass  # FunctionCallCancel already recorded the terminated output
            except Exception as exc:  # a bug here must not leave the client polling forever
                traceback.print_exc()
                result = api_pb2.GenericResult(
                    status=api_pb2.GenericResult.GENERIC_STATUS_INTERNAL_FAILURE,
                    exception=f"fake Modal control plane error: {exc!r}",
                )
                self._finish(call, result, "failure", repr(exc))

        async def _attempt(self, call: Call, args: tuple, kwargs: dict) -> tuple[str, Any, str | None]:
            """Run the body once; returns (status, GenericResult, error description)."""
            fn = call.function
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(
                self.executor, self.preemptions.run, call.call_id, invoke, fn.target, args, kwargs
            )
            try:
                if fn.timeout:
                    value = await asyncio.wait_for(future, fn.timeout)
                else:
                    value = await future
            except TimeoutError:
                # The worker thread cannot be killed; its eventual result is discarded.
                message = f"Function call {call.call_id} timed out after {fn.timeout} seconds"
                result = api_pb2.GenericResult(
                    status=api_pb2.GenericResult.GENERIC_STATUS_TIMEOUT, exception=message
                )
                return "failure", result, "timeout"
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Preempted:
                return "preempted", None, None
            except Exception as exc:
                return "failure", self._failure_result(call, exc), repr(exc)
            try:
                data = serialize_data_format(value, api_pb2.DATA_FORMAT_PICKLE)
            except Exception as exc:
                return "failure", self._failure_result(call, exc), repr(exc)
            if len(data) > MAX_OBJECT_SIZE_BYTES:
                blob_id = self._new_id("bl")
                self.blobs[blob_id] = data
                result = api_pb2.GenericResult(
                    status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS, data_blob_id=blob_id
                )
            else:
                result = api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_SUCCESS, data=data)
            return "success", result, None

        def _failure_result(self, call: Call, exc: BaseException) -> Any:
            """The failure output a Modal container reports (ContainerIOManager.output_items_exception)."""
            data = pickle_exception(exc)
            serialized_tb, tb_line_cache = pickle_traceback(exc, f"ta-fake-{call.call_id}")
            kwargs: dict[str, Any] = {"data": data}
            if len(data) > MAX_OBJECT_SIZE_BYTES:
                blob_id = self._new_id("bl")
                self.blobs[blob_id] = data
                kwargs = {"data_blob_id": blob_id}
            return api_pb2.GenericResult(
                status=api_pb2.GenericResult.GENERIC_STATUS_FAILURE,
                exception=repr(exc)[: MAX_OBJECT_SIZE_BYTES - 1000],
                traceback="".join(traceback.format_exception(exc)),
                serialized_tb=serialized_tb,
                tb_line_cache=tb_line_cache,
                **kwargs,
            )

        def _finish(self, call: Call, result: Any, status: str, error: str | None = None) -> None:
            if call.done.is_set():
                return
            call.output = api_pb2.FunctionGetOutputsItem(
                result=result,
                idx=0,
                input_id=call.input_id,
                data_format=api_pb2.DATA_FORMAT_PICKLE,
                output_created_at=time.time(),
            )
            call.done.set()
            event: dict[str, Any] = {"type": "finished", "call_id": call.call_id, "status": status}
            if error is not None:
                event["error"] = error
            self.events.write(event)

        # ---- RPCs ----

        async def ClientHello(self, stream) -> None:
            await stream.recv_message()
            await stream.send_message(api_pb2.ClientHelloResponse())

        async def AuthTokenGet(self, stream) -> None:
            await stream.recv_message()
            token = _fake_jwt({"exp": int(time.time()) + 3600, "sub": "fake"})
            await stream.send_message(api_pb2.AuthTokenGetResponse(token=token))

        async def FunctionGet(self, stream) -> None:
            req = await stream.recv_message()
            fn = self.by_name.get((req.app_name, req.object_tag))
            if fn is None:
                env = f" in environment '{req.environment_name}'" if req.environment_name else ""
                if not any(app == req.app_name for app, _ in self.by_name):
                    raise GRPCError(Status.NOT_FOUND, f"App '{req.app_name}' not found{env}")
                raise GRPCError(
                    Status.NOT_FOUND, f"Function '{req.object_tag}' not found in app '{req.app_name}'"
                )
            await stream.send_message(
                api_pb2.FunctionGetResponse(
                    function_id=fn.function_id,
                    handle_metadata=self._handle_metadata(fn),
                    function=self._function_data(fn),
                )
            )

        async def FunctionBindParams(self, stream) -> None:
            req = await stream.recv_message()
            parent = self._get_function(req.function_id)
            opts = req.function_options
            key = (parent.function_id, opts.SerializeToString(deterministic=True) + req.serialized_params)
            bound_id = self.bound.get(key)
            if bound_id is None:
                gpu, timeout, retry_policy = parent.gpu, parent.timeout, parent.retry_policy
                if opts.HasField("resources") and opts.resources.gpu_config.count > 0:
                    gpu_cfg = opts.resources.gpu_config
                    gpu = gpu_cfg.gpu_type if gpu_cfg.count == 1 else f"{gpu_cfg.gpu_type}:{gpu_cfg.count}"
                if opts.HasField("timeout_secs"):
                    timeout = opts.timeout_secs
                if opts.HasField("retry_policy"):
                    retry_policy = api_pb2.FunctionRetryPolicy()
                    retry_policy.CopyFrom(opts.retry_policy)
                variant = dataclasses.replace(
                    parent,
                    function_id=self._new_id("fu"),
                    gpu=gpu,
                    timeout=timeout,
                    retry_policy=retry_policy,
                )
                self.functions[variant.function_id] = variant
                self.bound[key] = bound_id = variant.function_id
            variant = self.functions[bound_id]
            await stream.send_message(
                api_pb2.FunctionBindParamsResponse(
                    bound_function_id=bound_id, handle_metadata=self._handle_metadata(variant)
                )
            )

        async def FunctionMap(self, stream) -> None:
            req = await stream.recv_message()
            fn = self._get_function(req.function_id)
            if req.function_call_type != api_pb2.FUNCTION_CALL_TYPE_UNARY or len(req.pipelined_inputs) > 1:
                raise GRPCError(
                    Status.UNIMPLEMENTED,
                    "fake Modal control plane supports single-input calls only (no .map)",
                )
            call = Call(call_id=self._new_id("fc"), function=fn)
            self.calls[call.call_id] = call
            pipelined = [await self._start_call(call, item) for item in req.pipelined_inputs]
            await stream.send_message(
                api_pb2.FunctionMapResponse(
                    function_call_id=call.call_id,
                    pipelined_inputs=pipelined,
                    retry_policy=fn.retry_policy,
                    function_call_jwt=_fake_jwt({"function_call_id": call.call_id}),
                    sync_client_retries_enabled=False,  # retries run here, server-side
                )
            )

        async def FunctionPutInputs(self, stream) -> None:
            req = await stream.recv_message()
            call = self._get_call(req.function_call_id)
            if call.input_id or len(req.inputs) != 1:
                raise GRPCError(Status.UNIMPLEMENTED, "fake Modal control plane supports one input per call")
            item = await self._start_call(call, req.inputs[0])
            await stream.send_message(api_pb2.FunctionPutInputsResponse(inputs=[item]))

        async def FunctionGetOutputs(self, stream) -> None:
            req = await stream.recv_message()
            call = self._get_call(req.function_call_id)
            if req.start_idx > 0:  # a spawn has exactly one input, index 0
                await stream.send_message(api_pb2.FunctionGetOutputsResponse(num_unfinished_inputs=0))
                return
            if not call.done.is_set() and req.timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(call.done.wait(), req.timeout)
            if call.done.is_set():
                response = api_pb2.FunctionGetOutputsResponse(
                    outputs=[call.output], idxs=[0], last_entry_id="1-0", num_unfinished_inputs=0
                )
            else:
                response = api_pb2.FunctionGetOutputsResponse(outputs=[], num_unfinished_inputs=1)
            await stream.send_message(response)

        async def FunctionCallCancel(self, stream) -> None:
            req = await stream.recv_message()
            call = self._get_call(req.function_call_id)
            self.events.write(
                {"type": "cancel", "call_id": call.call_id, "terminate_containers": req.terminate_containers}
            )
            if not call.done.is_set():
                call.cancelled = True
                if call.task is not None:
                    call.task.cancel()
                # What a container reports for a cancelled input (output_items_cancellation): TERMINATED,
                # no data. The client's get() turns that into modal.exception.RemoteError.
                self._finish(
                    call,
                    api_pb2.GenericResult(status=api_pb2.GenericResult.GENERIC_STATUS_TERMINATED),
                    "cancelled",
                )
            await stream.send_message(Empty())

        async def FunctionCallFromId(self, stream) -> None:
            req = await stream.recv_message()
            call = self._get_call(req.function_call_id)
            await stream.send_message(
                api_pb2.FunctionCallFromIdResponse(
                    function_call_id=call.call_id,
                    num_inputs=1,
                    metadata=api_pb2.FunctionCallHandleMetadata(
                        app_id=f"ap-{call.function.app}", function_id=call.function.function_id
                    ),
                )
            )

        async def BlobCreate(self, stream) -> None:
            await stream.recv_message()
            blob_id = self._new_id("bl")
            url = f"{self.blob_url_base}/blobs/{blob_id}"
            await stream.send_message(
                api_pb2.BlobCreateResponse(blob_ids=[blob_id], upload_urls=api_pb2.UploadUrlList(items=[url]))
            )

        async def BlobGet(self, stream) -> None:
            req = await stream.recv_message()
            if req.blob_id not in self.blobs:
                raise GRPCError(Status.NOT_FOUND, f"Blob {req.blob_id!r} not found")
            await stream.send_message(
                api_pb2.BlobGetResponse(download_url=f"{self.blob_url_base}/blobs/{req.blob_id}")
            )

    return FakeModalServicer


def _dict_rpcs(api_pb2: Any, GRPCError: Any, Status: Any) -> type:
    """The RPCs of named `modal.Dict`s (modal 1.6.4: `from_name`, `put`, `get`, `pop`, `contains`,
    `len`), kept in memory. Keys and values stay in the client's serialized form: equal keys
    serialize to equal bytes, and values go back to the reader exactly as the writer sent them.
    Ephemeral Dicts (`Dict.ephemeral`) are not served (they need heartbeats): the fallback names them.
    """

    class FakeDicts:
        def _dicts(self) -> dict[str, dict[bytes, bytes]]:
            if not hasattr(self, "_dict_store"):
                self._dict_store: dict[str, dict[bytes, bytes]] = {}
                self._dict_ids: dict[str, str] = {}  # name -> id (one environment)
                self._dict_names: dict[str, str] = {}
            return self._dict_store

        def _dict(self, dict_id: str) -> dict[bytes, bytes]:
            store = self._dicts().get(dict_id)
            if store is None:
                raise GRPCError(Status.NOT_FOUND, f"Dict {dict_id!r} not found")
            return store

        async def DictGetOrCreate(self, stream) -> None:
            req = await stream.recv_message()
            if not req.deployment_name:
                raise GRPCError(Status.UNIMPLEMENTED, "fake Modal control plane serves named Dicts only")
            self._dicts()
            dict_id = self._dict_ids.get(req.deployment_name)
            if dict_id is None:
                if req.object_creation_type != api_pb2.OBJECT_CREATION_TYPE_CREATE_IF_MISSING:
                    raise GRPCError(Status.NOT_FOUND, f"Dict '{req.deployment_name}' not found")
                dict_id = self._new_id("di")
                self._dict_ids[req.deployment_name] = dict_id
                self._dict_names[dict_id] = req.deployment_name
                self._dict_store[dict_id] = {}
            metadata = api_pb2.DictMetadata(name=req.deployment_name)
            await stream.send_message(api_pb2.DictGetOrCreateResponse(dict_id=dict_id, metadata=metadata))

        async def DictUpdate(self, stream) -> None:
            req = await stream.recv_message()
            store = self._dict(req.dict_id)
            created = False
            for entry in req.updates:
                if req.if_not_exists and entry.key in store:
                    continue
                store[entry.key] = entry.value
                created = True
            name = self._dict_names[req.dict_id]
            self.events.write({"type": "dict_put", "dict": name, "keys": len(req.updates)})
            await stream.send_message(api_pb2.DictUpdateResponse(created=created))

        async def DictGet(self, stream) -> None:
            req = await stream.recv_message()
            store = self._dict(req.dict_id)
            found = req.key in store
            value = store.get(req.key, b"")
            await stream.send_message(api_pb2.DictGetResponse(found=found, value=value))

        async def DictPop(self, stream) -> None:
            req = await stream.recv_message()
            store = self._dict(req.dict_id)
            found = req.key in store
            value = store.pop(req.key, b"")
            await stream.send_message(api_pb2.DictPopResponse(found=found, value=value))

        async def DictContains(self, stream) -> None:
            req = await stream.recv_message()
            found = req.key in self._dict(req.dict_id)
            await stream.send_message(api_pb2.DictContainsResponse(found=found))

        async def DictLen(self, stream) -> None:
            req = await stream.recv_message()
            await stream.send_message(api_pb2.DictLenResponse(len=len(self._dict(req.dict_id))))

    return FakeDicts


def point_bodies_at(url: str, credentials: tuple[str, str] | None) -> None:
    """The function bodies' own modal client talks to this plane, as a container's talks to Modal.

    Bodies run as threads of this process; the client they build (`Client.from_env`) reads these.
    """
    token_id, token_secret = credentials or ("ak-fake-container", "as-fake-container")
    os.environ.update(
        {"MODAL_SERVER_URL": url, "MODAL_TOKEN_ID": token_id, "MODAL_TOKEN_SECRET": token_secret}
    )


def _blob_app(servicer: Any):
    """The HTTP side of blob storage (what S3 is for real Modal): PUT and GET of whole blobs."""
    from aiohttp import web

    async def put_blob(request: web.Request) -> web.Response:
        data = await request.read()
        servicer.blobs[request.match_info["blob_id"]] = data
        return web.Response(status=200, headers={"ETag": f'"{hashlib.md5(data).hexdigest()}"'})

    async def get_blob(request: web.Request) -> web.Response:
        data = servicer.blobs.get(request.match_info["blob_id"])
        if data is None:
            return web.Response(status=404, text="blob not found")
        return web.Response(status=200, body=data, content_type="application/octet-stream")

    async def preempt(request: web.Request) -> web.Response:
        call_id = request.match_info["call_id"]
        if not servicer.preemptions.preempt(call_id):
            return web.Response(status=404, text=f"call {call_id} has no running input")
        return web.Response(status=200, text="preempted")

    app = web.Application(client_max_size=1024**3)
    app.router.add_put("/blobs/{blob_id}", put_blob)
    app.router.add_get("/blobs/{blob_id}", get_blob)
    app.router.add_post("/faults/preempt/{call_id}", preempt)
    return app


def _bind(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


async def serve(args: argparse.Namespace) -> None:
    import grpclib.events
    import grpclib.server
    from aiohttp import web

    functions: dict[tuple[str, str], Callable[..., Any]] = {}
    for spec in args.functions:
        app, name, target = parse_function_spec(spec)
        functions[(app, name)] = resolve_target(target)

    credentials = tuple(args.token.split(":", 1)) if args.token else None
    events = EventLog(Path(args.events_file) if args.events_file else None)
    servicer = _build_servicer_class()(
        functions, events=events, delay=args.delay, workers=args.workers, credentials=credentials
    )

    blob_sock = _bind(0)
    runner = web.AppRunner(_blob_app(servicer), access_log=None)
    await runner.setup()
    await web.SockSite(runner, blob_sock).start()
    servicer.blob_url_base = f"http://{HOST}:{blob_sock.getsockname()[1]}"

    grpc_sock = _bind(args.port)
    server = grpclib.server.Server([servicer])
    grpclib.events.listen(server, grpclib.events.RecvRequest, servicer.recv_request)
    await server.start(sock=grpc_sock)
    port = grpc_sock.getsockname()[1]
    point_bodies_at(f"http://{HOST}:{port}", credentials)

    if args.control_file:
        Path(args.control_file).write_text(servicer.blob_url_base + "\n")
    if args.ready_file:
        ready = Path(args.ready_file)
        tmp = ready.with_name(ready.name + ".tmp")
        tmp.write_text(f"{port}\n")
        tmp.replace(ready)  # atomic: a reader never sees a half-written port
    print(
        f"fake Modal control plane listening on http://{HOST}:{port} ({len(functions)} functions)", flush=True
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    events.close()
    # Worker threads may still run user code that cannot be interrupted: leave without joining them.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m scripts.fake_modal.server",
        description="Fake Modal control plane for the real modal client (offline, 127.0.0.1 only).",
    )
    parser.add_argument(
        "functions", nargs="*", metavar="APP/NAME=module:attr", help="deployed functions to serve"
    )
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0 = pick a free one)")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds each call waits before its body runs"
    )
    parser.add_argument("--events-file", help="append one JSON line per event here")
    parser.add_argument("--ready-file", help="write the bound port here once listening")
    parser.add_argument("--control-file", help="write the base URL of the fault-control endpoint here")
    parser.add_argument(
        "--workers", type=int, default=DEFAULT_WORKERS, help="worker threads for function bodies"
    )
    parser.add_argument(
        "--token", help="require this TOKEN_ID:TOKEN_SECRET (default: accept any non-empty token)"
    )
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    for spec in args.functions:
        try:
            parse_function_spec(spec)
        except ValueError as exc:
            build_parser().error(str(exc))
    # `python scripts/fake_modal/server.py` puts scripts/fake_modal on sys.path, not the repo root.
    for path in (str(REPO_ROOT), os.getcwd()):
        if path not in sys.path:
            sys.path.insert(0, path)
    asyncio.run(serve(args))


if __name__ == "__main__":
    main()
