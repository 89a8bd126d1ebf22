package usage

import (
	"errors"
	"fmt"
)

// Error is a problem in what the user gave us. Its message names the problem
// and the fix in one line.
type Error struct {
	msg string
	err error
}

func (e *Error) Error() string { return e.msg }
func (e *Error) Unwrap() error { return e.err }

// Errorf builds a usage error; %w wraps as fmt.Errorf does.
func Errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	return &Error{msg: err.Error(), err: errors.Unwrap(err)}
}

// Wrap marks err as a usage error, keeping its message.
func Wrap(err error) error {
	if err == nil || Is(err) {
		return err
	}
	return &Error{msg: err.Error(), err: err}
}

// Is reports whether err is, or wraps, a usage error.
func Is(err error) bool {
	var e *Error
	return errors.As(err, &e)
}
