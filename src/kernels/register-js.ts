/** Importing this module activates the js reference backend unless a backend is already active, so tensors always work. */
import { getBackend, setBackend } from '../tensor/backend.js';
import { JsBackend } from './js.js';

try {
  getBackend();
} catch {
  setBackend(new JsBackend());
}
