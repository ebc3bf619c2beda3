package dev.nearfield.plans;

/** A message is not a record of the expected type; the message says which rule it broke. */
public final class DecodeException extends Exception {
  private static final long serialVersionUID = 1L;

  public DecodeException(String message) {
    super(message);
  }

  public DecodeException(String message, Throwable cause) {
    super(message, cause);
  }
}
