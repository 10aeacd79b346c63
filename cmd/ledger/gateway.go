package main

// gatewayFlags configure gateway mode (GET /v1/authz; see
// handlers/httpapi/gateway.go and deploy/gateways/).
type gatewayFlags struct {
	AuthzUnavailableStatus int `name:"authz-unavailable-status" default:"${default_authz_unavailable_status}" env:"LEDGER_AUTHZ_UNAVAILABLE_STATUS" help:"Status of /v1/authz when the ledger cannot vouch for a token (projection behind, an error of its own): 401, 403 or 503, with X-Ledger-Reason: unavailable:…. nginx auth_request passes only 401 and 403 on (anything else becomes a 500)."`
}
