import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from proctor.v1 import decisions_pb2 as _decisions_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AuditKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIT_KIND_UNSPECIFIED: _ClassVar[AuditKind]
    AUDIT_KIND_DECISION: _ClassVar[AuditKind]
    AUDIT_KIND_BUDGET: _ClassVar[AuditKind]
    AUDIT_KIND_APPROVAL: _ClassVar[AuditKind]
    AUDIT_KIND_POLICY_RELOAD: _ClassVar[AuditKind]
    AUDIT_KIND_GAP: _ClassVar[AuditKind]
AUDIT_KIND_UNSPECIFIED: AuditKind
AUDIT_KIND_DECISION: AuditKind
AUDIT_KIND_BUDGET: AuditKind
AUDIT_KIND_APPROVAL: AuditKind
AUDIT_KIND_POLICY_RELOAD: AuditKind
AUDIT_KIND_GAP: AuditKind

class AuditEvent(_message.Message):
    __slots__ = ("event_id", "seq", "time", "kind", "writer", "request_id", "run_id", "tenant", "delegation_path", "topic", "risk_tags", "derived_tags", "labels", "outcome", "rule_id", "reason", "policy_version", "decision_id", "approval_id", "latency_us", "prev_hash", "hash", "hmac", "record_json", "cursor")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DELEGATION_PATH_FIELD_NUMBER: _ClassVar[int]
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    RISK_TAGS_FIELD_NUMBER: _ClassVar[int]
    DERIVED_TAGS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    DECISION_ID_FIELD_NUMBER: _ClassVar[int]
    APPROVAL_ID_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    PREV_HASH_FIELD_NUMBER: _ClassVar[int]
    HASH_FIELD_NUMBER: _ClassVar[int]
    HMAC_FIELD_NUMBER: _ClassVar[int]
    RECORD_JSON_FIELD_NUMBER: _ClassVar[int]
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    seq: int
    time: _timestamp_pb2.Timestamp
    kind: AuditKind
    writer: str
    request_id: str
    run_id: str
    tenant: str
    delegation_path: _containers.RepeatedScalarFieldContainer[str]
    topic: str
    risk_tags: _containers.RepeatedScalarFieldContainer[str]
    derived_tags: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.ScalarMap[str, str]
    outcome: str
    rule_id: str
    reason: str
    policy_version: str
    decision_id: str
    approval_id: str
    latency_us: int
    prev_hash: str
    hash: str
    hmac: str
    record_json: str
    cursor: str
    def __init__(self, event_id: _Optional[str] = ..., seq: _Optional[int] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., kind: _Optional[_Union[AuditKind, str]] = ..., writer: _Optional[str] = ..., request_id: _Optional[str] = ..., run_id: _Optional[str] = ..., tenant: _Optional[str] = ..., delegation_path: _Optional[_Iterable[str]] = ..., topic: _Optional[str] = ..., risk_tags: _Optional[_Iterable[str]] = ..., derived_tags: _Optional[_Iterable[str]] = ..., labels: _Optional[_Mapping[str, str]] = ..., outcome: _Optional[str] = ..., rule_id: _Optional[str] = ..., reason: _Optional[str] = ..., policy_version: _Optional[str] = ..., decision_id: _Optional[str] = ..., approval_id: _Optional[str] = ..., latency_us: _Optional[int] = ..., prev_hash: _Optional[str] = ..., hash: _Optional[str] = ..., hmac: _Optional[str] = ..., record_json: _Optional[str] = ..., cursor: _Optional[str] = ...) -> None: ...

class AuditFilter(_message.Message):
    __slots__ = ("tenant", "decision", "topic_prefix", "kinds")
    TENANT_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    TOPIC_PREFIX_FIELD_NUMBER: _ClassVar[int]
    KINDS_FIELD_NUMBER: _ClassVar[int]
    tenant: str
    decision: str
    topic_prefix: str
    kinds: _containers.RepeatedScalarFieldContainer[AuditKind]
    def __init__(self, tenant: _Optional[str] = ..., decision: _Optional[str] = ..., topic_prefix: _Optional[str] = ..., kinds: _Optional[_Iterable[_Union[AuditKind, str]]] = ...) -> None: ...

class StreamDecisionsRequest(_message.Message):
    __slots__ = ("cursor", "filter", "follow")
    CURSOR_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_FIELD_NUMBER: _ClassVar[int]
    cursor: str
    filter: AuditFilter
    follow: bool
    def __init__(self, cursor: _Optional[str] = ..., filter: _Optional[_Union[AuditFilter, _Mapping]] = ..., follow: _Optional[bool] = ...) -> None: ...

class LocalDecision(_message.Message):
    __slots__ = ("request", "response", "decided_at", "latency_us")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    DECIDED_AT_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    request: _decisions_pb2.EvaluateRequest
    response: _decisions_pb2.EvaluateResponse
    decided_at: _timestamp_pb2.Timestamp
    latency_us: int
    def __init__(self, request: _Optional[_Union[_decisions_pb2.EvaluateRequest, _Mapping]] = ..., response: _Optional[_Union[_decisions_pb2.EvaluateResponse, _Mapping]] = ..., decided_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., latency_us: _Optional[int] = ...) -> None: ...

class IngestBatch(_message.Message):
    __slots__ = ("batch_seq", "decisions")
    BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    DECISIONS_FIELD_NUMBER: _ClassVar[int]
    batch_seq: int
    decisions: _containers.RepeatedCompositeFieldContainer[LocalDecision]
    def __init__(self, batch_seq: _Optional[int] = ..., decisions: _Optional[_Iterable[_Union[LocalDecision, _Mapping]]] = ...) -> None: ...

class IngestAck(_message.Message):
    __slots__ = ("batch_seq", "recorded", "duplicates")
    BATCH_SEQ_FIELD_NUMBER: _ClassVar[int]
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    batch_seq: int
    recorded: int
    duplicates: int
    def __init__(self, batch_seq: _Optional[int] = ..., recorded: _Optional[int] = ..., duplicates: _Optional[int] = ...) -> None: ...
