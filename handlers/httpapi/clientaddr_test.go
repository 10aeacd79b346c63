package httpapi

import (
	"net/netip"
	"testing"
)

func TestClientAddress(t *testing.T) {
	trusted, err := ParseTrustedProxies([]string{"10.0.0.0/8", "fd00::/8", "192.0.2.7"})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		peer string
		xff  []string
		want string
	}{
		{name: "untrusted peer, no header", peer: "203.0.113.5:4711", want: "203.0.113.5"},
		{name: "untrusted peer spoofs X-Forwarded-For", peer: "203.0.113.5:4711", xff: []string{"198.51.100.1"}, want: "203.0.113.5"},
		{name: "untrusted peer spoofs a trusted address", peer: "203.0.113.5:4711", xff: []string{"10.1.1.1"}, want: "203.0.113.5"},
		{name: "trusted peer, no header", peer: "10.0.0.2:80", want: "10.0.0.2"},
		{name: "trusted peer, one hop", peer: "10.0.0.2:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "client-made entries left of the real one are ignored", peer: "10.0.0.2:80", xff: []string{"1.1.1.1, 2.2.2.2, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "trusted hops are skipped from the right", peer: "10.0.0.2:80", xff: []string{"6.6.6.6, 198.51.100.1, 10.9.9.9,192.0.2.7"}, want: "198.51.100.1"},
		{name: "several headers read in order", peer: "10.0.0.2:80", xff: []string{"6.6.6.6, 198.51.100.1", "10.9.9.9", "192.0.2.7"}, want: "198.51.100.1"},
		{name: "client-made header before the proxy's own", peer: "10.0.0.2:80", xff: []string{"10.3.3.3", "198.51.100.9"}, want: "198.51.100.9"},
		{name: "garbage from the client is never reached", peer: "10.0.0.2:80", xff: []string{"not an address, 198.51.100.1"}, want: "198.51.100.1"},
		{name: "garbage where a proxy wrote: the last trusted hop", peer: "10.0.0.2:80", xff: []string{"198.51.100.1, unknown"}, want: "10.0.0.2"},
		{name: "garbage behind a trusted hop", peer: "10.0.0.2:80", xff: []string{"198.51.100.1, bogus, 10.4.4.4"}, want: "10.4.4.4"},
		{name: "empty entry", peer: "10.0.0.2:80", xff: []string{"198.51.100.1,"}, want: "10.0.0.2"},
		{name: "empty header", peer: "10.0.0.2:80", xff: []string{""}, want: "10.0.0.2"},
		{name: "every hop trusted", peer: "10.0.0.2:80", xff: []string{"10.5.5.5, 10.6.6.6"}, want: "10.5.5.5"},
		{name: "entries with ports", peer: "10.0.0.2:80", xff: []string{"198.51.100.1:5555"}, want: "198.51.100.1"},
		{name: "IPv6 entry in brackets with a port", peer: "10.0.0.2:80", xff: []string{"[2001:db8::1]:443"}, want: "2001:db8::1"},
		{name: "IPv6 entry in brackets", peer: "10.0.0.2:80", xff: []string{"[2001:db8::1]"}, want: "2001:db8::1"},
		{name: "trusted IPv6 peer", peer: "[fd00::1]:80", xff: []string{"2001:db8::2"}, want: "2001:db8::2"},
		{name: "IPv4-mapped peer counts as IPv4", peer: "[::ffff:10.0.0.2]:80", xff: []string{"198.51.100.1"}, want: "198.51.100.1"},
		{name: "IPv4-mapped client", peer: "[::ffff:203.0.113.5]:80", want: "203.0.113.5"},
		{name: "zone dropped", peer: "[fe80::1%eth0]:80", want: "fe80::1"},
		{name: "peer not an address", peer: "@", xff: []string{"198.51.100.1"}, want: "invalid IP"},
	}
	for _, c := range cases {
		got := ClientAddress(c.peer, c.xff, trusted)
		if got.String() != c.want {
			t.Errorf("%s: peer %s, X-Forwarded-For %q: %s, want %s", c.name, c.peer, c.xff, got, c.want)
		}
	}
	// Without trusted proxies the header is never read.
	if got := ClientAddress("10.0.0.2:80", []string{"198.51.100.1"}, nil); got.String() != "10.0.0.2" {
		t.Errorf("no trusted proxies: %s", got)
	}
}

func TestParseTrustedProxies(t *testing.T) {
	got, err := ParseTrustedProxies([]string{"10.1.2.3/8", " 127.0.0.1 ", "::1", "2001:db8::/32", ""})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "127.0.0.1/32", "::1/128", "2001:db8::/32"}
	if len(got) != len(want) {
		t.Fatalf("%v, want %v", got, want)
	}
	for i := range want {
		if got[i].String() != want[i] {
			t.Errorf("%d: %s, want %s", i, got[i], want[i])
		}
	}
	if _, err := ParseTrustedProxies([]string{"10.0.0.0/33", "proxy.example.com"}); err == nil {
		t.Fatal("bad prefixes accepted")
	}
}

func TestAddressKeyGroupsIPv6By64(t *testing.T) {
	k := func(s string) netip.Prefix { return addressKey(netip.MustParseAddr(s)) }
	if k("2001:db8:1:2:aaaa::1") != k("2001:db8:1:2:ffff:1:2:3") {
		t.Error("two addresses of one /64 count apart")
	}
	if k("2001:db8:1:2::1") == k("2001:db8:1:3::1") {
		t.Error("two /64s count as one")
	}
	if k("198.51.100.1") == k("198.51.100.2") {
		t.Error("two IPv4 addresses count as one")
	}
	if k("198.51.100.1").Bits() != 32 || k("2001:db8::1").Bits() != 64 {
		t.Errorf("keys %s, %s", k("198.51.100.1"), k("2001:db8::1"))
	}
}
