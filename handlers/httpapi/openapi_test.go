package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// TestOpenAPIMatchesTheRoutes: the served description is OpenAPI 3.1, every
// route of the access table (and gateway mode) is documented with its
// method, and every documented operation is a route.
func TestOpenAPIMatchesTheRoutes(t *testing.T) {
	api := New(Config{Metrics: http.NotFoundHandler()})
	w := httptest.NewRecorder()
	api.Handler().ServeHTTP(w, httptest.NewRequest("GET", "/openapi.json", nil))
	if w.Code != 200 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("GET /openapi.json: %d %s", w.Code, w.Header().Get("Content-Type"))
	}
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("not an OpenAPI 3.1 document: %q %v", doc.OpenAPI, err)
	}
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	// OpenAPI writes ServeMux's {name...} as {name}.
	openAPIPath := func(p string) string { return strings.ReplaceAll(p, "...}", "}") }
	routed := map[string]bool{}
	for _, rt := range api.Routes() {
		op := rt.Method + " " + openAPIPath(rt.Path)
		routed[op] = true
		if !documented[op] {
			t.Errorf("route %s is not in openapi.yaml", op)
		}
	}
	for _, rt := range GatewayRoutes() { // every method; documented once, as get
		op := "GET " + openAPIPath(rt.Path)
		routed[op] = true
		if !documented[op] {
			t.Errorf("gateway route %s is not in openapi.yaml", op)
		}
	}
	var extra []string
	for op := range documented {
		if !routed[op] {
			extra = append(extra, op)
		}
	}
	slices.Sort(extra)
	if len(extra) > 0 {
		t.Errorf("openapi.yaml documents operations that are not routes: %v", extra)
	}
}
