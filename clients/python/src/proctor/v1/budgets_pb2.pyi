import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BudgetKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BUDGET_KIND_UNSPECIFIED: _ClassVar[BudgetKind]
    BUDGET_KIND_SPEND: _ClassVar[BudgetKind]
    BUDGET_KIND_CONCURRENCY: _ClassVar[BudgetKind]
BUDGET_KIND_UNSPECIFIED: BudgetKind
BUDGET_KIND_SPEND: BudgetKind
BUDGET_KIND_CONCURRENCY: BudgetKind

class BudgetStatus(_message.Message):
    __slots__ = ("budget_id", "unit", "scope", "scope_key", "kind", "limit", "used", "reserved", "remaining", "window", "window_resets_at", "over")
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    SCOPE_FIELD_NUMBER: _ClassVar[int]
    SCOPE_KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    USED_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    REMAINING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    WINDOW_RESETS_AT_FIELD_NUMBER: _ClassVar[int]
    OVER_FIELD_NUMBER: _ClassVar[int]
    budget_id: str
    unit: str
    scope: str
    scope_key: str
    kind: BudgetKind
    limit: int
    used: int
    reserved: int
    remaining: int
    window: str
    window_resets_at: _timestamp_pb2.Timestamp
    over: bool
    def __init__(self, budget_id: _Optional[str] = ..., unit: _Optional[str] = ..., scope: _Optional[str] = ..., scope_key: _Optional[str] = ..., kind: _Optional[_Union[BudgetKind, str]] = ..., limit: _Optional[int] = ..., used: _Optional[int] = ..., reserved: _Optional[int] = ..., remaining: _Optional[int] = ..., window: _Optional[str] = ..., window_resets_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., over: _Optional[bool] = ...) -> None: ...

class ReserveBudgetRequest(_message.Message):
    __slots__ = ("reservation_id", "tenant", "agent_id", "run_id", "unit", "amount", "ttl_seconds", "allow_unbudgeted")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    UNIT_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    TTL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ALLOW_UNBUDGETED_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    tenant: str
    agent_id: str
    run_id: str
    unit: str
    amount: int
    ttl_seconds: int
    allow_unbudgeted: bool
    def __init__(self, reservation_id: _Optional[str] = ..., tenant: _Optional[str] = ..., agent_id: _Optional[str] = ..., run_id: _Optional[str] = ..., unit: _Optional[str] = ..., amount: _Optional[int] = ..., ttl_seconds: _Optional[int] = ..., allow_unbudgeted: _Optional[bool] = ...) -> None: ...

class ReserveBudgetResponse(_message.Message):
    __slots__ = ("granted", "refused_by", "budgets", "reservation_id", "expires_at")
    GRANTED_FIELD_NUMBER: _ClassVar[int]
    REFUSED_BY_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    granted: bool
    refused_by: str
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    reservation_id: str
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, granted: _Optional[bool] = ..., refused_by: _Optional[str] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ..., reservation_id: _Optional[str] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CommitBudgetRequest(_message.Message):
    __slots__ = ("reservation_id", "actual")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    actual: int
    def __init__(self, reservation_id: _Optional[str] = ..., actual: _Optional[int] = ...) -> None: ...

class CommitBudgetResponse(_message.Message):
    __slots__ = ("reservation_id", "budgets", "over")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    OVER_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    over: bool
    def __init__(self, reservation_id: _Optional[str] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ..., over: _Optional[bool] = ...) -> None: ...

class ReleaseBudgetRequest(_message.Message):
    __slots__ = ("reservation_id",)
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    def __init__(self, reservation_id: _Optional[str] = ...) -> None: ...

class ReleaseBudgetResponse(_message.Message):
    __slots__ = ("reservation_id", "budgets")
    RESERVATION_ID_FIELD_NUMBER: _ClassVar[int]
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    reservation_id: str
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    def __init__(self, reservation_id: _Optional[str] = ..., budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ...) -> None: ...

class GetBudgetRequest(_message.Message):
    __slots__ = ("budget_id", "tenant", "agent_id", "run_id")
    BUDGET_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    budget_id: str
    tenant: str
    agent_id: str
    run_id: str
    def __init__(self, budget_id: _Optional[str] = ..., tenant: _Optional[str] = ..., agent_id: _Optional[str] = ..., run_id: _Optional[str] = ...) -> None: ...

class GetBudgetResponse(_message.Message):
    __slots__ = ("budgets",)
    BUDGETS_FIELD_NUMBER: _ClassVar[int]
    budgets: _containers.RepeatedCompositeFieldContainer[BudgetStatus]
    def __init__(self, budgets: _Optional[_Iterable[_Union[BudgetStatus, _Mapping]]] = ...) -> None: ...
