"""mDNS discovery: devices on one link find peers of their mesh with no addresses typed.

``Discovery`` (in ``service``) announces ``_moltmesh._tcp.local.`` and browses for others;
``advert`` is the pure TXT codec and event types; ``interfaces`` resolves which interfaces mDNS
may use. A discovered peer is a *candidate* only: it joins through the mesh's authenticated
path, and liveness comes from SWIM (mDNS never reports a cut link). Static seeds remain the way
to meet peers where multicast does not reach.

This package imports python-zeroconf; ``import moltmesh`` does not import this package.
"""

from __future__ import annotations

from moltmesh.discovery.advert import (
    SERVICE_TYPE,
    TXT_VERSION,
    Advert,
    Candidate,
    DiscoveryEvent,
    DiscoveryEventKind,
    MalformedAdvert,
    decode_txt,
    encode_txt,
)
from moltmesh.discovery.interfaces import InterfaceError, InterfacePlan, plan_interfaces
from moltmesh.discovery.metrics import DiscoveryCollector
from moltmesh.discovery.service import Discovery, DiscoveryError, DiscoveryStats

__all__ = [
    "SERVICE_TYPE",
    "TXT_VERSION",
    "Advert",
    "Candidate",
    "Discovery",
    "DiscoveryCollector",
    "DiscoveryError",
    "DiscoveryEvent",
    "DiscoveryEventKind",
    "DiscoveryStats",
    "InterfaceError",
    "InterfacePlan",
    "MalformedAdvert",
    "decode_txt",
    "encode_txt",
    "plan_interfaces",
]
