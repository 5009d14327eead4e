package api

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/rs/zerolog"
)

// The shadow report is public; the recorded trace needs the admin token.
func TestExperimentsShadowAndTraceRoutes(t *testing.T) {
	ok := func(body string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte(body)) })
	}
	s := New(Config{}, Deps{Log: zerolog.Nop(), AdminToken: "tok", Shadow: ok("shadow"), Trace: ok("trace")})
	for _, tc := range []struct {
		path, token string
		want        int
	}{
		{"/v1/experiments/shadow", "", http.StatusOK},
		{"/v1/experiments/trace", "", http.StatusUnauthorized},
		{"/v1/experiments/trace", "wrong", http.StatusUnauthorized},
		{"/v1/experiments/trace", "tok", http.StatusOK},
	} {
		req := httptest.NewRequest("GET", tc.path, nil)
		if tc.token != "" {
			req.Header.Set("Authorization", "Bearer "+tc.token)
		}
		rec := httptest.NewRecorder()
		s.Handler().ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("GET %s (token %q): %d %s, want %d", tc.path, tc.token, rec.Code, rec.Body, tc.want)
		}
	}
}
