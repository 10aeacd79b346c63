package httpapi

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// ParseTrustedProxies reads --trusted-proxies: CIDR prefixes, or bare
// addresses (one host each).
func ParseTrustedProxies(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var errs []error
	for _, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if p, err := netip.ParsePrefix(s); err == nil {
			out = append(out, p.Masked())
			continue
		}
		if a, err := netip.ParseAddr(s); err == nil && a.Zone() == "" {
			a = a.Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
			continue
		}
		errs = append(errs, fmt.Errorf("--trusted-proxies: %q is not a CIDR prefix (e.g. 10.0.0.0/8) or an address", s))
	}
	return out, errors.Join(errs...)
}

// ClientAddress is the address a request comes from, as far as this
// server can tell. The TCP peer (remoteAddr) is the answer unless it is a
// trusted proxy; only then is X-Forwarded-For read (every such header, in
// order, each a comma-separated list), from the right: each entry was
// appended by the hop to its right, so entries are believed only while
// that hop is trusted. The first entry that is not itself a trusted proxy
// is the client. Anything left of it may be made up by the client and is
// never read. An entry that is not an address (garbage, "unknown", an empty
// one), where a trusted proxy should have written one, stops the walk at the
// last trusted hop. The
// result is invalid only when remoteAddr is not an address.
func ClientAddress(remoteAddr string, xff []string, trusted []netip.Prefix) netip.Addr {
	peer := parseHost(remoteAddr)
	if !peer.IsValid() || !isTrusted(peer, trusted) {
		return peer
	}
	last := peer // the nearest hop known so far, trusted
	for i := len(xff) - 1; i >= 0; i-- {
		entries := strings.Split(xff[i], ",")
		for j := len(entries) - 1; j >= 0; j-- {
			a := parseHost(strings.TrimSpace(entries[j]))
			if !a.IsValid() {
				return last
			}
			if !isTrusted(a, trusted) {
				return a
			}
			last = a
		}
	}
	// Every hop is trusted (an internal caller behind the proxies): the
	// farthest one is the client.
	return last
}

// parseHost reads "addr", "addr:port" or "[v6]:port" (as RemoteAddr and
// some proxies' X-Forwarded-For entries are written). IPv4-mapped IPv6
// addresses become IPv4; zones are dropped.
func parseHost(s string) netip.Addr {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			// "[v6]" without a port.
			if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
				if a, err = netip.ParseAddr(s[1 : len(s)-1]); err == nil {
					return a.Unmap().WithZone("")
				}
			}
			return netip.Addr{}
		}
		a = ap.Addr()
	}
	return a.Unmap().WithZone("")
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// addressKey is the unit a per-address limit counts: an IPv4 address, or
// the /64 of an IPv6 address (one host is routinely given a whole /64, so
// counting single IPv6 addresses would give an attacker 2^64 buckets). An
// invalid address maps to the zero prefix: all such requests share one
// bucket.
func addressKey(a netip.Addr) netip.Prefix {
	if !a.IsValid() {
		return netip.Prefix{}
	}
	if a.Is4() {
		return netip.PrefixFrom(a, 32)
	}
	p, _ := a.Prefix(64)
	return p
}

// clientAddress is ClientAddress for a request to this API.
func (a *API) clientAddress(r *http.Request) netip.Addr {
	if len(a.cfg.Limits.TrustedProxies) == 0 {
		return parseHost(r.RemoteAddr)
	}
	return ClientAddress(r.RemoteAddr, r.Header.Values("X-Forwarded-For"), a.cfg.Limits.TrustedProxies)
}
