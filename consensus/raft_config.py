"""Raft's configuration: timeouts in integer microseconds, flow-control limits, presets."""

from __future__ import annotations

from dataclasses import dataclass

from consensus.core import MICROS_PER_MS, Micros
from consensus.errors import ConfigError
from consensus.messages import RAFT_MAX_FRAME

_MS = MICROS_PER_MS


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tuning of one Raft node. All times are integer microseconds.

    - ``election_timeout_min`` / ``election_timeout_max``: a follower that hears nothing from a
      leader for a timeout drawn uniformly from ``[min, max)`` (from the node's rng) campaigns.
      ``min`` is also the check-quorum period of a leader and the length of a follower's lease
      (during which it refuses to vote for others).
    - ``heartbeat_interval``: how often a leader sends heartbeats; must be well below
      ``election_timeout_min`` (at least 2 fit in it).
    - ``max_inflight_msgs``: append messages sent to a follower in *replicate* state and not yet
      acknowledged (flow control). A follower in *probe* state gets one at a time.
    - ``max_entries_per_msg`` / ``max_bytes_per_msg``: size of one append message (at least one
      entry always goes, whatever its size).
    - ``pre_vote``: run a pre-vote round before bumping the term (a partitioned node that comes
      back cannot disrupt a healthy leader).
    - ``check_quorum``: a leader that has not heard from a quorum within ``election_timeout_min``
      steps down, and followers that heard from a leader within that time ignore vote requests.
    - ``max_promote_lag``: a learner may be promoted to voter only when its acknowledged log is
      at most this many entries behind the leader's last index (and it answered recently).
    """

    election_timeout_min: Micros = 150 * _MS
    election_timeout_max: Micros = 300 * _MS
    heartbeat_interval: Micros = 50 * _MS
    max_inflight_msgs: int = 256
    max_entries_per_msg: int = 512
    max_bytes_per_msg: int = 1024 * 1024
    pre_vote: bool = True
    check_quorum: bool = True
    max_promote_lag: int = 64

    @classmethod
    def lan(cls) -> RaftConfig:
        """Defaults for a LAN (sub-millisecond to few-ms RTT), as in the Raft paper."""
        return cls(
            election_timeout_min=150 * _MS,  # the paper's recommended 150-300 ms range
            election_timeout_max=300 * _MS,  # wide enough that split votes are rare
            heartbeat_interval=50 * _MS,  # 3 heartbeats per minimum election timeout
            max_inflight_msgs=256,  # etcd's default window: plenty for LAN bandwidth-delay
            max_entries_per_msg=512,  # bounds per-message CPU on small devices
            max_bytes_per_msg=1024 * 1024,  # 1 MiB, etcd's default MaxSizePerMsg
            pre_vote=True,  # a rejoining node never disrupts a healthy leader
            check_quorum=True,  # a leader cut off from the majority steps down
            max_promote_lag=64,  # one append message's worth: the rest follows within an RTT
        )

    @classmethod
    def local(cls) -> RaftConfig:
        """Fast timers for tests and the loopback: elections settle in tens of milliseconds."""
        return cls(
            election_timeout_min=20 * _MS,  # loopback RTT is microseconds; 20 ms is ample
            election_timeout_max=40 * _MS,  # 2x min, like the paper's ratio
            heartbeat_interval=5 * _MS,  # 4 per minimum election timeout
            max_inflight_msgs=64,  # smaller window so tests exercise flow control
            max_entries_per_msg=64,  # small batches so tests exercise batching
            max_bytes_per_msg=64 * 1024,  # 64 KiB per message
            pre_vote=True,  # same safety features as production
            check_quorum=True,
            max_promote_lag=16,  # small so tests exercise the catch-up check
        )

    @classmethod
    def wan(cls) -> RaftConfig:
        """Timers for slow or lossy links (cellular backhaul, 100+ ms RTT)."""
        return cls(
            election_timeout_min=1_000 * _MS,  # several RTTs plus loss before suspecting
            election_timeout_max=2_000 * _MS,  # wide range: fewer split votes on slow links
            heartbeat_interval=200 * _MS,  # 5 per minimum timeout: survives a few losses
            max_inflight_msgs=512,  # larger window for a larger bandwidth-delay product
            max_entries_per_msg=1024,  # fewer, larger messages on expensive links
            max_bytes_per_msg=2 * 1024 * 1024,  # 2 MiB per message
            pre_vote=True,
            check_quorum=True,
            max_promote_lag=128,  # entries arrive in big batches; a few still in flight is fine
        )

    def validate(self) -> RaftConfig:
        """Return ``self`` if sound, else raise ``ConfigError`` saying what is wrong."""
        for name in ("election_timeout_min", "election_timeout_max", "heartbeat_interval"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigError(
                    f"{name} must be a positive integer of microseconds, got {value!r}"
                )
        for name in ("max_inflight_msgs", "max_entries_per_msg", "max_bytes_per_msg"):
            value = getattr(self, name)
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if type(self.max_promote_lag) is not int or self.max_promote_lag < 0:
            raise ConfigError(
                f"max_promote_lag must be a non-negative integer, got {self.max_promote_lag!r}"
            )
        if self.election_timeout_min >= self.election_timeout_max:
            raise ConfigError(
                f"election_timeout_min ({self.election_timeout_min} µs) must be below "
                f"election_timeout_max ({self.election_timeout_max} µs): the timeout is drawn "
                "from [min, max)"
            )
        if self.election_timeout_min <= 2 * self.heartbeat_interval:
            raise ConfigError(
                f"election_timeout_min ({self.election_timeout_min} µs) must exceed twice the "
                f"heartbeat_interval ({self.heartbeat_interval} µs), or followers campaign "
                "against a healthy leader"
            )
        if self.max_bytes_per_msg > RAFT_MAX_FRAME // 2:
            raise ConfigError(
                f"max_bytes_per_msg ({self.max_bytes_per_msg}) must be at most half the frame "
                f"limit ({RAFT_MAX_FRAME}) to leave room for framing"
            )
        for name in ("pre_vote", "check_quorum"):
            if type(getattr(self, name)) is not bool:
                raise ConfigError(f"{name} must be a bool")
        return self
