package httpapi

import (
	"net/http/httptest"
	"testing"
)

func TestQueryParam(t *testing.T) {
	cases := []struct {
		query, name, want string
		present           bool
	}{
		{"touch=false", "touch", "false", true},
		{"a=1&touch=false&b=2", "touch", "false", true},
		{"min_seq=42", "min_seq", "42", true},
		{"min_seq=", "min_seq", "", true},
		{"min_seq", "min_seq", "", true},
		{"min%5Fseq=7", "min_seq", "7", true},
		{"touch=fa%6Cse", "touch", "false", true},
		{"to%75ch=a+b", "touch", "a b", true},
		{"tou+ch=1&touch=2", "touch", "2", true},
		{"touchy=false", "touch", "", false},
		{"", "touch", "", false},
	}
	for _, c := range cases {
		r := httptest.NewRequest("GET", "/v1/validate?"+c.query, nil)
		got, present := queryParam(r, c.name)
		want := r.URL.Query().Get(c.name)
		if got != c.want || present != c.present || got != want {
			t.Errorf("queryParam(%q, %q) = %q %v, want %q %v (url.Values: %q)", c.query, c.name, got, present, c.want, c.present, want)
		}
	}
}
