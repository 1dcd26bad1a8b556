package rt

import "github.com/sluice-streaming/sluice/guest-sdk/go/internal/wit/sluice_app_types"

// Error is what an operator or plan function reports: either the job's
// configuration is wrong (it will not start until the user fixes it) or
// processing failed (the task fails and the job may restart).
type Error struct {
	invalidConfig bool
	message       string
}

func (e *Error) Error() string { return e.message }

// InvalidConfig reports wrong job arguments or operator configuration.
func InvalidConfig(message string) error { return &Error{invalidConfig: true, message: message} }

// Failed reports that processing failed.
func Failed(message string) error { return &Error{message: message} }

// toWit turns any error into the contract's: an *Error keeps its kind,
// anything else counts as a failure.
func toWit(err error) sluice_app_types.Error {
	if e, ok := err.(*Error); ok && e.invalidConfig {
		return sluice_app_types.MakeErrorInvalidConfig(e.message)
	}
	return sluice_app_types.MakeErrorFailed(err.Error())
}
