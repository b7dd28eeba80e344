"""``GET /v1/mesh/members`` for the node's HTTP API (aiohttp).

The API is built before the mesh starts, so routes hold a ``MeshRef`` whose ``runtime`` is set
once the mesh runs (and cleared when it stops). Wire it in the app builder::

    ref = MeshRef()
    add_mesh_routes(app, ref)        # before the app is frozen (runner setup)
    ...
    ref.runtime = mesh_runtime       # when the mesh is up

The bearer-token middleware of the API applies as to every other non-health route.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from moltmesh.mesh.runtime import MeshRuntime


@dataclass
class MeshRef:
    runtime: MeshRuntime | None = None


MESH_REF = web.AppKey("mesh_ref", MeshRef)


def members_document(runtime: MeshRuntime) -> dict[str, object]:
    """The JSON body of ``/v1/mesh/members`` (also what ``moltmesh status`` prints)."""
    cap = runtime.capability()
    me: dict[str, object] = {"node": runtime.node_id, "mesh": runtime.service.state.mesh_id}
    if cap is not None:
        me.update(
            tier=cap.tier, providers=list(cap.providers), on_battery=cap.on_battery,
            battery_percent=cap.battery_percent,
        )  # fmt: skip
    return {**me, "members": [m.to_json() for m in runtime.members()]}


async def members(request: web.Request) -> web.Response:
    runtime = request.app[MESH_REF].runtime
    if runtime is None:
        return web.json_response(
            {"error": "this node is not part of a mesh (moltmesh mesh init, or --token)"},
            status=503,
        )
    render = runtime.service.members_document  # what `moltmesh status` gets, Raft view included
    if render is None:
        return web.json_response(members_document(runtime))
    return web.Response(body=render(), content_type="application/json")


def add_mesh_routes(app: web.Application, ref: MeshRef) -> None:
    app[MESH_REF] = ref
    app.router.add_get("/v1/mesh/members", members)
