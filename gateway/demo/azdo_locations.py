"""Stand-in only: the location service data of the Azure DevOps stand-in.

SDKs find their way around Azure DevOps at run time: `GET /{org}/_apis/resourceAreas`
says which host serves which API area (`locationUrl`), `OPTIONS /{org}/_apis` on that
host lists its API resource locations (id, route template, versions), `OPTIONS
/{org}/_apis/{area}` those of one area (what azure-devops-node-api asks), and
`GET /{org}/_apis/connectionData` describes the instance and its access mappings.
The ids and route templates here are those Azure DevOps publishes for the areas the
stand-in serves.
"""

from __future__ import annotations

from typing import Any

from gateway.demo.azdo_data import Organization, stable_id

Json = dict[str, Any]

# area id, area name, host that serves it
RESOURCE_AREAS: tuple[tuple[str, str, str], ...] = (
    ("79134c72-4a58-4b42-976c-04e7115f32bf", "core", "main"),
    ("4e080c62-fa21-4fbc-8fef-2a10a2b38049", "git", "main"),
    ("965220d5-5bb9-42cf-8d67-9b146df2a5a4", "build", "main"),
    ("5264459e-e5e0-4bd8-b118-0985e68a4ec5", "wit", "main"),
    ("efc2f575-36ef-48e9-b672-0c6fb4a48ac5", "Release", "vsrm"),
    ("bb1e7ec9-e901-4b68-999a-de7012b920f8", "Graph", "vssps"),
)

# id, area, resourceName, routeTemplate, resourceVersion, maxVersion
_LOCATION = [
    (
        "e81700f7-3be2-46de-8624-2eb35882fcaa",
        "Location",
        "ResourceAreas",
        "_apis/{resource}/{areaId}",
        1,
    ),
    ("00d9565f-ed9c-4a06-9a50-00e7896ccab4", "Location", "ConnectionData", "_apis/{resource}", 1),
]
LOCATIONS: dict[str, list[tuple[str, str, str, str, int]]] = {
    "main": _LOCATION
    + [
        (
            "603fe2ac-9723-48b9-88ad-09305aa6c6e1",
            "core",
            "projects",
            "_apis/{resource}/{*projectId}",
            4,
        ),
        (
            "225f7195-f9c7-4d14-ab28-a83f7ff77e1f",
            "git",
            "repositories",
            "{project}/_apis/{area}/{resource}/{repositoryId}",
            1,
        ),
        (
            "c2570c3b-5b3f-41b8-98bf-5407bfde8d58",
            "git",
            "commits",
            "{project}/_apis/{area}/repositories/{repositoryId}/{resource}/{commitId}",
            1,
        ),
        (
            "2d874a60-a811-4f62-9c9f-963a6ea0a55b",
            "git",
            "refs",
            "{project}/_apis/{area}/repositories/{repositoryId}/{resource}/{*filter}",
            1,
        ),
        (
            "dbeaf647-6167-421a-bda9-c9327b25e2e6",
            "build",
            "definitions",
            "{project}/_apis/{area}/{resource}/{definitionId}",
            7,
        ),
        (
            "0cd358e1-9217-4d94-8269-1c1ee6f93dcf",
            "build",
            "builds",
            "{project}/_apis/{area}/{resource}/{buildId}",
            7,
        ),
        (
            "72c7ddf8-2cdc-4f60-90cd-ab71c14a399b",
            "wit",
            "workItems",
            "{project}/_apis/{area}/{resource}/{id}",
            3,
        ),
    ],
    "vsrm": _LOCATION
    + [
        (
            "a166fde7-27ad-408e-ba75-703c2cc9d500",
            "Release",
            "releases",
            "{project}/_apis/{area}/{resource}/{releaseId}",
            8,
        ),
        (
            "d8f96f24-8ea7-4cb6-baab-2df8fc515665",
            "Release",
            "definitions",
            "{project}/_apis/{area}/{resource}/{definitionId}",
            4,
        ),
    ],
    "vssps": _LOCATION
    + [
        (
            "005e26ec-6b77-4e4f-a986-b3827bf241f5",
            "graph",
            "users",
            "_apis/{area}/{resource}/{userDescriptor}",
            1,
        ),
    ],
}


def resource_areas(org: Organization) -> list[Json]:
    return [
        {"id": area_id, "name": name, "locationUrl": f"{org.hosts[host]}/{org.name}/"}
        for area_id, name, host in RESOURCE_AREAS
        if host in org.hosts
    ]


def api_locations(host: str, area_name: str | None = None) -> list[Json]:
    """The ApiResourceLocation list of a host, or of one area on it (any case)."""
    wanted = area_name.lower() if area_name else None
    return [
        {
            "id": lid,
            "area": area,
            "resourceName": resource,
            "routeTemplate": template,
            "resourceVersion": version,
            "minVersion": "1.0",
            "maxVersion": "7.2",
            "releasedVersion": "7.1",
        }
        for lid, area, resource, template, version in LOCATIONS.get(host, [])
        if wanted is None or area.lower() == wanted
    ]


def connection_data(org: Organization, host: str, user: str) -> Json:
    """What `GET /{org}/_apis/connectionData` answers on `host`."""
    access_point = f"{org.hosts[host]}/{org.name}/"
    user_id = stable_id("identity", user)
    identity = {
        "id": user_id,
        "descriptor": f"Microsoft.IdentityModel.Claims.ClaimsIdentity;{user}",
        "subjectDescriptor": f"aad.{user_id}",
        "providerDisplayName": user,
        "isActive": True,
        "properties": {},
    }
    return {
        "authenticatedUser": identity,
        "authorizedUser": identity,
        "instanceId": stable_id(org.name, "instance"),
        "deploymentId": stable_id("deployment"),
        "deploymentType": "hosted",
        "locationServiceData": {
            "serviceOwner": stable_id("service-owner", host),
            "defaultAccessMappingMoniker": "PublicAccessMapping",
            "lastChangeId": 1,
            "lastChangeId64": 1,
            "accessMappings": [
                {
                    "displayName": "Public Access Mapping",
                    "moniker": "PublicAccessMapping",
                    "accessPoint": access_point,
                    "virtualDirectory": "",
                }
            ],
            "serviceDefinitions": [
                {
                    "serviceType": "LocationService2",
                    "identifier": stable_id("location", name),
                    "displayName": f"{name} location service",
                    "relativeToSetting": "fullyQualified",
                    "relativePath": "",
                    "serviceOwner": stable_id("service-owner", name),
                    "toolId": "Framework",
                    "locationMappings": [
                        {
                            "accessMappingMoniker": "PublicAccessMapping",
                            "location": f"{url}/{org.name}/",
                        }
                    ],
                }
                for name, url in org.hosts.items()
            ],
        },
    }
