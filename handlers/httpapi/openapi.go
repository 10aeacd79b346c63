package httpapi

import (
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"

	"gopkg.in/yaml.v3"
)

// openAPIYAML is the API's OpenAPI 3.1 description, written as YAML for
// people and served as JSON at /openapi.json. TestOpenAPIMatchesTheRoutes
// holds it to the access table: every route documented, every documented
// path a route.
//
//go:embed openapi.yaml
var openAPIYAML []byte

// OpenAPI is the description as JSON.
func OpenAPI() ([]byte, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(openAPIYAML, &doc); err != nil {
		return nil, fmt.Errorf("openapi.yaml: %w", err)
	}
	return json.Marshal(doc)
}

var openAPIJSON = func() []byte {
	b, err := OpenAPI()
	if err != nil {
		panic(err) // the embedded file is checked by the tests
	}
	return b
}()

func (a *API) openAPI(w http.ResponseWriter, _ *http.Request) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "public, max-age=300")
	_, _ = w.Write(openAPIJSON)
}
