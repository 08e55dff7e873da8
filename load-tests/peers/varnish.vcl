# Varnish (Debian's 7.1) in front of camsim, for `load-tests/run compare`. The runner fills in
# the placeholders between at signs (camsim's address, the TTL) and runs its own varnishd in the foreground on a free
# loopback port, with its own work folder, independent of any system varnish.
#
# Keyed on the hub's Authorization plus the path, with request coalescing (Varnish's waiting
# list, on by default): what a team would deploy instead of framecache. It verifies no token
# and no frame signature, and a rotated token is a new key (a miss). The owner camsim needs is
# taken from the client's X-Hub-Owner header — trusting the client, which framecache never does.

vcl 4.1;

backend camsim {
    .host = "@ORIGIN_HOST@";
    .port = "@ORIGIN_PORT@";
    .connect_timeout = 500ms;
    .first_byte_timeout = 3s;
    .between_bytes_timeout = 3s;
}

sub vcl_recv {
    if (req.method != "GET" && req.method != "HEAD") {
        return (synth(405));
    }
    if (req.url !~ "^/v1/cameras/[A-Za-z0-9._-]+/(frame|frames/[0-9a-f]{64})$") {
        return (synth(404));
    }
    set req.url = regsub(req.url, "^/v1", "");
    set req.http.X-Framecache-Owner = req.http.X-Hub-Owner;
    # The built-in vcl_recv passes every request with an Authorization header (it is private);
    # here they are cached, and the Authorization is part of the key (vcl_hash).
    return (hash);
}

sub vcl_hash {
    hash_data(req.http.Authorization);
    hash_data(req.url);
    # Not the built-in vcl_hash: the Host header is not part of the key.
    return (lookup);
}

sub vcl_backend_response {
    # camsim sends no Cache-Control; the built-in rules (Set-Cookie, private, no-store) are
    # skipped, as nginx's proxy_ignore_headers does.
    set beresp.ttl = @TTL@;
    # Stale frames while one request refreshes or camsim fails (as framecache's
    # stale_if_error_secs).
    set beresp.grace = 30s;
    return (deliver);
}

sub vcl_deliver {
    set resp.http.Cache-Status = "varnish; hits=" + obj.hits;
}
