package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/kiln-gpu/kiln/internal/httpjson"
	"github.com/kiln-gpu/kiln/internal/policy"
	abi "github.com/kiln-gpu/kiln/sdk/policy"
)

// maxModuleBytes bounds an uploaded policy module.
const maxModuleBytes = 64 << 20

// registerPolicies serves /v1/policies from the policy host
// (internal/policy):
//
//	GET  /v1/policies                     every kind: active policy, versions, changes
//	GET  /v1/policies/{kind}              one kind
//	POST /v1/policies/{kind}?name=N[&activate=1][&reason=R]   body: the .wasm module → 201
//	POST /v1/policies/{kind}/activate     {"name", "version", "reason"}
//	POST /v1/policies/{kind}/rollback     {"reason"}
//	POST /v1/policies/{kind}/unload       {"name", "version", "reason"}: 409 for the active version or one an experiment runs
//	PUT  /v1/policies/{kind}/params       {"name", "value"} or {"params": {name: value, ...}}, all or none
//
// Mutations need the admin token (policyAdmin); errors are
// {"error": {"type", "message"}}.
func (s *Server) registerPolicies() {
	h := s.deps.Policies
	if h == nil {
		return
	}
	s.handle("GET /v1/policies", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpjson.Write(w, http.StatusOK, map[string]any{"policies": h.List()})
	}))
	s.handle("GET /v1/policies/{kind}", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		k, ok := kindParam(w, r)
		if !ok {
			return
		}
		for _, ki := range h.List() {
			if ki.Kind == k.String() {
				httpjson.Write(w, http.StatusOK, ki)
			}
		}
	}))
	s.handle("POST /v1/policies/{kind}", s.policyAdmin(func(w http.ResponseWriter, r *http.Request, k abi.Kind) {
		q := r.URL.Query()
		name := q.Get("name")
		data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxModuleBytes))
		if err != nil {
			httpjson.Error(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("module larger than %d bytes", maxModuleBytes))
			return
		}
		activate := q.Get("activate") == "1" || q.Get("activate") == "true"
		vi, err := h.Load(r.Context(), k, name, data, activate, q.Get("reason"))
		if err != nil {
			httpjson.Error(w, http.StatusUnprocessableEntity, "invalid_policy", err.Error())
			return
		}
		code := http.StatusCreated
		if vi.Reused {
			code = http.StatusOK // the same bytes are already this version
		}
		httpjson.Write(w, code, vi)
	}))
	s.handle("POST /v1/policies/{kind}/activate", s.policyAdmin(func(w http.ResponseWriter, r *http.Request, k abi.Kind) {
		var body struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
			Reason  string `json:"reason"`
		}
		if !readPolicyBody(w, r, &body) {
			return
		}
		vi, err := h.Activate(r.Context(), k, body.Name, body.Version, body.Reason)
		if err != nil {
			writePolicyFailure(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, vi)
	}))
	s.handle("POST /v1/policies/{kind}/rollback", s.policyAdmin(func(w http.ResponseWriter, r *http.Request, k abi.Kind) {
		var body struct {
			Reason string `json:"reason"`
		}
		if !readPolicyBody(w, r, &body) {
			return
		}
		vi, err := h.Rollback(k, body.Reason)
		if err != nil {
			writePolicyFailure(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, vi)
	}))
	s.handle("POST /v1/policies/{kind}/unload", s.policyAdmin(func(w http.ResponseWriter, r *http.Request, k abi.Kind) {
		var body struct {
			Name    string `json:"name"`
			Version int    `json:"version"`
			Reason  string `json:"reason"`
		}
		if !readPolicyBody(w, r, &body) {
			return
		}
		if body.Name == "" || body.Version < 1 {
			httpjson.Error(w, http.StatusBadRequest, "invalid_body", `want {"name": N, "version": V (≥ 1), "reason": R}`)
			return
		}
		vi, err := h.Unload(k, body.Name, body.Version, body.Reason)
		if err != nil {
			writePolicyFailure(w, err)
			return
		}
		httpjson.Write(w, http.StatusOK, vi)
	}))
	s.handle("PUT /v1/policies/{kind}/params", s.policyAdmin(func(w http.ResponseWriter, r *http.Request, k abi.Kind) {
		// One value ({"name","value"}) or several at once ({"params":
		// {name: value}}), applied together or not at all.
		var body struct {
			Name   string             `json:"name"`
			Value  *float64           `json:"value"`
			Params map[string]float64 `json:"params"`
		}
		if !readPolicyBody(w, r, &body) {
			return
		}
		set := body.Params
		switch {
		case body.Name != "" && body.Value != nil && set == nil:
			set = map[string]float64{body.Name: *body.Value}
		case body.Name != "" || body.Value != nil || len(set) == 0:
			httpjson.Error(w, http.StatusBadRequest, "invalid_body", `want {"name": N, "value": V} or {"params": {N: V, ...}}`)
			return
		}
		if err := h.SetParams(k, set); err != nil {
			if errors.Is(err, policy.ErrUnknownParam) {
				httpjson.Error(w, http.StatusBadRequest, "unknown_param", err.Error())
				return
			}
			httpjson.Error(w, http.StatusBadRequest, "invalid_param", err.Error())
			return
		}
		w.WriteHeader(http.StatusNoContent)
	}))
}

func kindParam(w http.ResponseWriter, r *http.Request) (abi.Kind, bool) {
	k, err := abi.ParseKind(r.PathValue("kind"))
	if err != nil {
		httpjson.Error(w, http.StatusNotFound, "unknown_kind", err.Error())
		return 0, false
	}
	return k, true
}

func readPolicyBody(w http.ResponseWriter, r *http.Request, v any) bool {
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, 1<<20))
	if err == nil && len(data) > 0 {
		err = json.Unmarshal(data, v)
	}
	if err != nil {
		httpjson.Error(w, http.StatusBadRequest, "invalid_body", "request body: "+err.Error())
		return false
	}
	return true
}

func writePolicyFailure(w http.ResponseWriter, err error) {
	if errors.Is(err, policy.ErrNotFound) {
		httpjson.Error(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	if errors.Is(err, policy.ErrInUse) {
		httpjson.Error(w, http.StatusConflict, "in_use", err.Error())
		return
	}
	httpjson.Error(w, http.StatusUnprocessableEntity, "invalid_policy", err.Error())
}
