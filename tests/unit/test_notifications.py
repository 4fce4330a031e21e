import pytest

from services.subscriber.notifications import BadPayload, parse_change_notifications, parse_lifecycle_notifications


def graph_body(**over):
    item = {
        "subscriptionId": "sub-1", "subscriptionExpirationDateTime": "2026-11-29T00:00:00Z",
        "clientState": "cs", "changeType": "created", "resource": "Users/u-1/Messages/m-1", "tenantId": "t-1",
        "resourceData": {"@odata.type": "#Microsoft.Graph.Message", "@odata.id": "Users/u-1/Messages/m-1",
                         "@odata.etag": 'W/"CQAAAB"', "id": "m-1"},
    }
    item.update(over)
    return {"value": [item]}


def test_parses_graph_shape():
    [n] = parse_change_notifications(graph_body())
    assert (n.subscription_id, n.client_state, n.change_type, n.tenant_id, n.message_id, n.etag) == \
        ("sub-1", "cs", "created", "t-1", "m-1", 'W/"CQAAAB"')


def test_message_id_from_resource_when_no_resource_data():
    [n] = parse_change_notifications(graph_body(resourceData=None))
    assert n.message_id == "m-1"


@pytest.mark.parametrize("body", [
    None, [], "x", {"value": "x"}, {"value": [1]}, graph_body(changeType="exploded"),
    graph_body(subscriptionId=5), graph_body(resourceData=None, resource="Users/u-1"),
    {"value": [{}] * 1001},
])
def test_bad_bodies_are_rejected_with_a_message(body):
    with pytest.raises(BadPayload) as info:
        parse_change_notifications(body)
    assert str(info.value)


def test_lifecycle():
    body = {"value": [{"subscriptionId": "s", "clientState": "c", "tenantId": "t",
                       "lifecycleEvent": "reauthorizationRequired"}]}
    [n] = parse_lifecycle_notifications(body)
    assert n.lifecycle_event == "reauthorizationRequired"
    body["value"][0]["lifecycleEvent"] = "other"
    with pytest.raises(BadPayload):
        parse_lifecycle_notifications(body)
