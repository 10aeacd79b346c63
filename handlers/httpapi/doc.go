// Package httpapi is the HTTP port: it turns requests into commands and
// queries and their results into the documented JSON contract. It holds no
// rules; every error body is {"statusCode","reason","message"}.
package httpapi
