package workflow

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// workflowName matches the names a workflow's bytes go by in kiln's code.
var workflowName = regexp.MustCompile(`(?i)workflow|^wf$|prompt|graph`)

// TestWorkflowDecodesAreCounted is the static half of internal/node's
// TestParseOnce, which counts decodes at run time through ReadCounts: a
// decode that bypasses this package (a json.Unmarshal, json.NewDecoder
// or msgpack.Unmarshal of something named like a workflow) in kiln's own
// code must sit in a function that reports it with CountDecode, so that
// the run-time count sees it. Tests are exempt.
func TestWorkflowDecodesAreCounted(t *testing.T) {
	for _, root := range []string{"../../internal", "../../cmd"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			for _, decl := range f.Decls {
				fn, ok := decl.(*ast.FuncDecl)
				if !ok || fn.Body == nil {
					continue
				}
				counted, decodes := false, []token.Pos(nil)
				ast.Inspect(fn.Body, func(n ast.Node) bool {
					call, ok := n.(*ast.CallExpr)
					if !ok {
						return true
					}
					sel, ok := call.Fun.(*ast.SelectorExpr)
					if !ok {
						return true
					}
					pkg, _ := sel.X.(*ast.Ident)
					if pkg == nil {
						return true
					}
					switch pkg.Name + "." + sel.Sel.Name {
					case "workflow.CountDecode", "workflow.Decode", "workflow.Parse":
						counted = true
					case "json.Unmarshal", "json.NewDecoder", "msgpack.Unmarshal":
						for _, arg := range call.Args {
							if mentions(arg, workflowName) {
								decodes = append(decodes, call.Pos())
								break
							}
						}
					}
					return true
				})
				if !counted {
					for _, p := range decodes {
						t.Errorf("%s: %s decodes a workflow without workflow.CountDecode: use workflow.Decode, or count it",
							fset.Position(p), fn.Name.Name)
					}
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// mentions reports whether an identifier in e matches re.
func mentions(e ast.Expr, re *regexp.Regexp) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if id, ok := n.(*ast.Ident); ok && re.MatchString(id.Name) {
			found = true
		}
		return !found
	})
	return found
}
