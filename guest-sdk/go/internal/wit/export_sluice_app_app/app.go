// Package export_sluice_app_app implements the contract's `app` interface
// (called by the generated wit_exports) with the SDK's registry.
package export_sluice_app_app

import (
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/rt"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_app"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_plan"
	"github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"
	witTypes "go.bytecodealliance.org/pkg/wit/types"
)

// Operators lists the application's operators.
func Operators() []sluice_app_app.OperatorInfo {
	rt.Collect()
	return rt.Operators()
}

// Plan builds a job's graph from its arguments.
func Plan(args []witTypes.Tuple2[string, string]) (res witTypes.Result[sluice_app_plan.Graph, sluice_app_types.Error]) {
	defer rt.OnPanic(func(err error) { res = rt.Result(sluice_app_plan.Graph{}, err) })
	rt.Collect()
	return rt.Result(rt.RunPlan(args))
}
