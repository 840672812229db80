"""The metadata paths, their parameters and Google's header rules, in-process."""

from __future__ import annotations

import pytest

from tests.metadata.conftest import FLAVOR, V1, Metadata, metadata_for
from tokensmith.clock import FixedClock
from tokensmith.main import Services
from tokensmith.metadata.instance import make_spec
from tokensmith.testing import free_port

DEFAULT_SCOPES = [
    "https://www.googleapis.com/auth/cloud-platform",
    "https://www.googleapis.com/auth/userinfo.email",
]


@pytest.fixture(scope="module")
def md(shared_md: Metadata) -> Metadata:
    """These tests only read: one server serves the whole module."""
    return shared_md


# --- header rules ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        ("/", {}, 200),
        ("/computeMetadata/", {}, 200),
        (f"{V1}/instance/name", FLAVOR, 200),
        (f"{V1}/instance", FLAVOR, 301),
        (f"{V1}/instance/name", {}, 403),
        (f"{V1}/instance/nope", FLAVOR, 404),
        (f"{V1}/instance/service-accounts/default/identity", FLAVOR, 400),
        (f"{V1}/instance/service-accounts/default/token", FLAVOR, 200),
        ("/", {"X-Forwarded-For": "10.0.0.1"}, 403),
    ],
)
def test_every_response_carries_metadata_flavor_and_server(
    md: Metadata, path: str, headers: dict[str, str], status: int
) -> None:
    """Whatever the status, the response says Metadata-Flavor: Google (Node insists)."""
    response = md.client.get(path, headers=headers, follow_redirects=False)
    assert response.status_code == status
    assert response.headers["metadata-flavor"] == "Google"
    assert response.headers["server"] == "Metadata Server for VM"
    assert response.headers["x-frame-options"] == "SAMEORIGIN"
    assert response.headers["x-xss-protection"] == "0"


def test_root_answers_the_detection_ping_without_the_header(md: Metadata) -> None:
    """GET / without Metadata-Flavor is 200 with the header (google-auth's GCE detection)."""
    response = md.client.get("/")
    assert response.status_code == 200
    assert response.text == "computeMetadata/\n"
    assert response.headers["content-type"] == "application/text"
    assert md.client.get("/computeMetadata/").text == "v1/\n"


@pytest.mark.parametrize(
    "headers",
    [{}, {"Metadata-Flavor": "Amazon"}, {"Metadata-Flavor": "google"}],
)
def test_v1_without_the_flavor_header_is_403_with_googles_text(
    md: Metadata, headers: dict[str, str]
) -> None:
    """/computeMetadata/v1/… without Metadata-Flavor: Google is 403 with Google's sentence."""
    response = md.client.get(f"{V1}/instance/name", headers=headers)
    assert response.status_code == 403
    assert response.headers["content-type"].startswith("text/html")
    assert (
        "Your client does not have permission to get URL "
        "<code>/computeMetadata/v1/instance/name</code> from this server. "
        "Missing Metadata-Flavor:Google header."
    ) in response.text


def test_legacy_request_header_is_accepted(md: Metadata) -> None:
    """X-Google-Metadata-Request: True stands in for Metadata-Flavor: Google."""
    response = md.client.get(
        f"{V1}/project/project-id", headers={"X-Google-Metadata-Request": "True"}
    )
    assert response.status_code == 200
    assert response.text == "tokensmith-local"


@pytest.mark.parametrize(
    "path", ["/", f"{V1}/instance/service-accounts/default/token", f"{V1}/project/project-id"]
)
def test_forwarded_requests_are_refused(md: Metadata, path: str) -> None:
    """A request carrying X-Forwarded-For came through a proxy: 403, even with the header."""
    response = md.get(path, headers={"X-Forwarded-For": "203.0.113.9"})
    assert response.status_code == 403
    assert "X-Forwarded-For" in response.text
    assert "access_token" not in response.text


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/instance/nope",
        f"{V1}/nope/",
        "/computeMetadata/v2/",
        "/latest/meta-data/",
        f"{V1}//project/",
    ],
)
def test_unknown_paths_are_404_with_googles_page(md: Metadata, path: str) -> None:
    """An unknown path is 404 with Google's "was not found on this server" page."""
    response = md.get(path)
    assert response.status_code == 404
    assert f"The requested URL <code>{path}</code> was not found on this server." in response.text


def test_404_page_escapes_the_path(md: Metadata) -> None:
    """The path is HTML-escaped in the error page."""
    response = md.get(f"{V1}/<script>")
    assert response.status_code == 404
    assert "<script>" not in response.text
    assert "&lt;script&gt;" in response.text


def test_methods_other_than_get_are_405(md: Metadata) -> None:
    """POST, PUT and DELETE are refused with 405 and an Allow header."""
    for method in ("POST", "PUT", "DELETE"):
        response = md.client.request(method, f"{V1}/instance/name", headers=FLAVOR)
        assert response.status_code == 405
        assert response.headers["allow"] == "GET, HEAD"
        assert response.headers["metadata-flavor"] == "Google"


# --- directories and redirects --------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "location"),
    [
        ("/computeMetadata", "/computeMetadata/"),
        (f"{V1}", f"{V1}/"),
        (f"{V1}/instance", f"{V1}/instance/"),
        (f"{V1}/instance/service-accounts/default", f"{V1}/instance/service-accounts/default/"),
        (f"{V1}/instance/attributes?recursive=true", f"{V1}/instance/attributes/?recursive=true"),
    ],
)
def test_directories_without_slash_redirect_to_it(md: Metadata, path: str, location: str) -> None:
    """A directory asked for without its trailing slash is a 301 to it (query kept)."""
    response = md.raw(path)
    assert response.status_code == 301
    assert response.headers["location"] == location


def test_node_ping_on_instance_follows_the_redirect_to_200(md: Metadata) -> None:
    """Node's detection GET /computeMetadata/v1/instance ends at 200 with the header."""
    response = md.client.get(f"{V1}/instance", headers=FLAVOR, follow_redirects=True)
    assert response.status_code == 200
    assert response.headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize(
    "path",
    [
        f"{V1}/instance/service-accounts/default/token/",
        f"{V1}/instance/service-accounts/default/identity/",
        f"{V1}/instance/name/",
        f"{V1}/project/project-id/",
    ],
)
def test_values_with_a_trailing_slash_are_404(md: Metadata, path: str) -> None:
    """A value (token, name, …) asked for as a directory is 404, never a redirect."""
    assert md.get(path).status_code == 404


def test_listings_name_children_one_per_line(md: Metadata) -> None:
    """Directories list their children, sub-directories with a trailing slash."""
    assert md.get(f"{V1}/").text == "instance/\nproject/\nuniverse/\n"
    assert md.get(f"{V1}/instance/").text == (
        "attributes/\nhostname\nid\nmachine-type\nname\nservice-accounts/\ntags\nzone\n"
    )
    assert md.get(f"{V1}/project/").text == "attributes/\nnumeric-project-id\nproject-id\n"


def test_service_accounts_lists_default_and_the_email(md: Metadata) -> None:
    """service-accounts/ lists default/ and EMAIL/ (gcloud splits it on whitespace)."""
    response = md.get(f"{V1}/instance/service-accounts/")
    assert response.text == f"default/\n{md.default_email}/\n"
    assert response.headers["content-type"] == "application/text"


def test_percent_encoded_email_paths_resolve(md: Metadata) -> None:
    """An account path with the email's @ percent-encoded (%40) names the same account."""
    encoded = md.default_email.replace("@", "%40")
    response = md.raw(f"{V1}/instance/service-accounts/{encoded}/email")
    assert response.status_code == 200
    assert response.text == md.default_email


@pytest.mark.parametrize("alias", ["default", "EMAIL"])
def test_account_directory_lists_its_endpoints(md: Metadata, alias: str) -> None:
    """Both default/ and EMAIL/ list aliases, email, identity, scopes and token."""
    name = md.default_email if alias == "EMAIL" else alias
    response = md.get(f"{V1}/instance/service-accounts/{name}/")
    assert response.text == "aliases\nemail\nidentity\nscopes\ntoken\n"


# --- values --------------------------------------------------------------------------------


def test_project_facts_are_text(md: Metadata) -> None:
    """project-id and the all-digits numeric-project-id (gcloud's detection) are text."""
    project = md.services.project
    numeric = md.get(f"{V1}/project/numeric-project-id")
    assert numeric.text == project.project_number
    assert numeric.text.isdigit()
    assert numeric.headers["content-type"] == "application/text"
    assert md.get(f"{V1}/project/project-id").text == "tokensmith-local"


def test_instance_facts(md: Metadata) -> None:
    """id, name, hostname, zone and machine-type describe the instance as GCE does."""
    number = md.services.project.project_number
    instance_id = md.get(f"{V1}/instance/id").text
    assert instance_id.isdigit()
    assert len(instance_id) == 19
    assert md.get(f"{V1}/instance/name").text == "instance-1"
    assert md.get(f"{V1}/instance/hostname").text == (
        "instance-1.us-central1-a.c.tokensmith-local.internal"
    )
    assert md.get(f"{V1}/instance/zone").text == f"projects/{number}/zones/us-central1-a"
    assert md.get(f"{V1}/instance/machine-type").text == (
        f"projects/{number}/machineTypes/e2-standard-2"
    )


def test_account_values(md: Metadata) -> None:
    """email, aliases and scopes of the attached account, under default/ and under EMAIL/."""
    for name in ("default", md.default_email):
        base = f"{V1}/instance/service-accounts/{name}"
        assert md.get(f"{base}/email").text == md.default_email
        assert md.get(f"{base}/aliases").text == "default\n"
        assert md.get(f"{base}/scopes").text == "".join(f"{s}\n" for s in DEFAULT_SCOPES)


def test_universe_domain_is_googleapis(md: Metadata) -> None:
    """universe/universe-domain is googleapis.com (gcloud and google-auth ask)."""
    assert md.get(f"{V1}/universe/universe-domain").text == "googleapis.com"


def test_tags_are_json_by_default(md: Metadata) -> None:
    """tags is a JSON list, as on Compute Engine; alt=text gives one per line."""
    response = md.get(f"{V1}/instance/tags")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == []


def test_account_recursive_is_json_without_token(md: Metadata) -> None:
    """default/?recursive=true is application/json with aliases, email and scopes only."""
    response = md.get(f"{V1}/instance/service-accounts/default/", recursive="true")
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "aliases": ["default"],
        "email": md.default_email,
        "scopes": DEFAULT_SCOPES,
    }


def test_instance_recursive_uses_camel_case_but_keeps_data_keys(
    services: Services, clock: FixedClock
) -> None:
    """recursive JSON camelCases path names; attribute keys and emails keep their spelling."""
    spec = make_spec(port=free_port(), attributes={"ssh-keys": "k", "startup-script": "s"})
    md = metadata_for(services, clock, spec)
    body = md.get(f"{V1}/instance/", recursive="true").json()
    assert set(body) == {
        "attributes",
        "hostname",
        "id",
        "machineType",
        "name",
        "serviceAccounts",
        "tags",
        "zone",
    }
    assert body["attributes"] == {"ssh-keys": "k", "startup-script": "s"}
    assert set(body["serviceAccounts"]) == {"default", md.default_email}
    assert isinstance(body["id"], int)
    root = md.get(f"{V1}/", recursive="true").json()
    assert root["project"]["numericProjectId"] == int(services.project.project_number)
    assert root["universe"] == {"universeDomain": "googleapis.com"}


def test_recursive_alt_text_flattens_to_path_value_lines(md: Metadata) -> None:
    """recursive=true&alt=text is one "path value" line per value, lists one line per item."""
    response = md.get(f"{V1}/instance/service-accounts/default/", recursive="true", alt="text")
    assert response.headers["content-type"] == "application/text"
    assert response.text.splitlines() == [
        "aliases default",
        f"email {md.default_email}",
        f"scopes {DEFAULT_SCOPES[0]}",
        f"scopes {DEFAULT_SCOPES[1]}",
    ]


def test_alt_json_and_text(md: Metadata) -> None:
    """alt=json renders values and listings as JSON; alt=text renders tags as lines."""
    name = md.get(f"{V1}/instance/name", alt="json")
    assert name.headers["content-type"] == "application/json"
    assert name.json() == "instance-1"
    assert isinstance(md.get(f"{V1}/instance/id", alt="json").json(), int)
    assert md.get(f"{V1}/project/", alt="json").json() == [
        "attributes/",
        "numeric-project-id",
        "project-id",
    ]
    assert md.get(f"{V1}/instance/tags", alt="text").text == ""


@pytest.mark.parametrize(
    ("path", "params", "message"),
    [
        (f"{V1}/instance/name", {"alt": "xml"}, "invalid alt"),
        (f"{V1}/instance/", {"recursive": "yes"}, "recursive"),
        (f"{V1}/instance/name", {"wait_for_change": "true", "timeout_sec": "soon"}, "timeout_sec"),
    ],
)
def test_bad_parameters_are_400_not_5xx(
    md: Metadata, path: str, params: dict[str, str], message: str
) -> None:
    """A parameter the server cannot use is a 400 that names it."""
    response = md.get(path, **params)
    assert response.status_code == 400
    assert message in response.text


def test_configured_instance_facts_are_served(services: Services, clock: FixedClock) -> None:
    """Name, zone, tags, attributes, project attributes and scopes come from the settings."""
    spec = make_spec(
        port=free_port(),
        name="web-1",
        zone="europe-west1-b",
        machine_type="n2-standard-4",
        tags=["http-server", "prod"],
        attributes={"role": "frontend"},
        project_attributes={"env": "dev"},
        scopes=["https://www.googleapis.com/auth/iam"],
        hostname="web-1.example.internal",
        id="1234567890123456789",
    )
    md = metadata_for(services, clock, spec)
    assert md.get(f"{V1}/instance/name").text == "web-1"
    assert md.get(f"{V1}/instance/zone").text.endswith("/zones/europe-west1-b")
    assert md.get(f"{V1}/instance/machine-type").text.endswith("/machineTypes/n2-standard-4")
    assert md.get(f"{V1}/instance/hostname").text == "web-1.example.internal"
    assert md.get(f"{V1}/instance/id").text == "1234567890123456789"
    assert md.get(f"{V1}/instance/tags").json() == ["http-server", "prod"]
    assert md.get(f"{V1}/instance/attributes/").text == "role\n"
    assert md.get(f"{V1}/instance/attributes/role").text == "frontend"
    assert md.get(f"{V1}/project/attributes/env").text == "dev"
    assert md.get(f"{V1}/instance/attributes/absent").status_code == 404
    scopes = md.get(f"{V1}/instance/service-accounts/default/scopes").text
    assert scopes == "https://www.googleapis.com/auth/iam\n"


def test_etag_is_stable_and_follows_the_content(md: Metadata) -> None:
    """The ETag of a value is the same on every read and differs between values."""
    first = md.get(f"{V1}/instance/name").headers["etag"]
    assert md.get(f"{V1}/instance/name").headers["etag"] == first
    assert md.get(f"{V1}/instance/hostname").headers["etag"] != first
    assert len(first) == 16
    assert int(first, 16) >= 0


def test_head_is_answered_like_get(md: Metadata) -> None:
    """HEAD gets the same status and headers as GET."""
    response = md.client.head(f"{V1}/project/project-id", headers=FLAVOR)
    assert response.status_code == 200
    assert response.headers["metadata-flavor"] == "Google"
