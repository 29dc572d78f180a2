/**
 * Checks for numbers that commands and library entry points take, with
 * messages that name the option and the bad value. Labels are the caller's:
 * the CLI says '--rate', the library 'rate'.
 */
import { UsageError } from './errors.js';

/** A whole number in min..max; `unit` ends the message (' bytes'). */
export function checkInteger(value: number, min: number, max: number, label: string, unit = ''): number {
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`invalid ${label} '${value}': use a whole number in ${min}..${max}${unit}`);
  }
  return value;
}

/** A number of milliseconds, more than 0. */
export function checkTimeoutMs(ms: number, label: string): number {
  if (!Number.isFinite(ms) || ms <= 0) throw new UsageError(`invalid ${label} '${ms}': use milliseconds, more than 0`);
  return ms;
}

/** A CLI number: the whole string must be one (commander hands over '12abc' as is). */
export function parseNumber(text: string, label: string, integer: boolean): number {
  const re = integer ? /^[0-9]+$/ : /^[0-9]+(\.[0-9]+)?$/;
  if (!re.test(text.trim())) {
    throw new UsageError(`invalid ${label} '${text}': use ${integer ? 'a whole number' : 'a number'}`);
  }
  return Number(text);
}
