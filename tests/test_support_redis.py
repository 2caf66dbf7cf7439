import redis
from redis.cluster import ClusterNode, RedisCluster


def test_private_redis_answers_and_stops(redis_proc):
    r = redis.Redis(port=redis_proc.port)
    assert r.ping()
    assert redis_proc.port != 6379
    redis_proc.stop()
    try:
        redis.Redis(port=redis_proc.port, socket_connect_timeout=0.2).ping()
        raise AssertionError("redis still answering after stop")
    except redis.ConnectionError:
        pass


def test_cluster_routes_by_hash_tag(redis_cluster):
    rc = RedisCluster(startup_nodes=[ClusterNode(h, p) for h, p in redis_cluster.startup_nodes])
    rc.set("{fleet}:a", "1")
    rc.set("{fleet}:b", "2")
    assert rc.keyslot("{fleet}:a") == rc.keyslot("{fleet}:b")
    assert rc.mget_nonatomic(["{fleet}:a", "{fleet}:b"]) == [b"1", b"2"]
    rc.close()
