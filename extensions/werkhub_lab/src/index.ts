/**
 * werkhub in JupyterLab.
 *
 * - Booking-end warnings: polls the single-user server extension
 *   (`GET {base_url}werkhub/notifications`, see werkhub_widgets/serverext.py) and shows each
 *   current warning once as a JupyterLab notification with an "Extend" action that opens
 *   the booking page. A warning whose booking was extended is dismissed and never shown
 *   again; a new warning for the new end time is shown when the service issues it.
 *   A borrowed booking reclaimed by another organisation shows the reclaim warning
 *   instead (when, by whom, and that the server restarts without GPUs with files kept).
 * - Launcher card "Template gallery": creates (once) and opens a notebook that calls
 *   `gallery()`, and runs it, so a new user sees the templates first.
 */
import {
  JupyterFrontEnd,
  JupyterFrontEndPlugin
} from '@jupyterlab/application';
import { ICommandPalette, Notification } from '@jupyterlab/apputils';
import { ILauncher } from '@jupyterlab/launcher';
import { LabIcon } from '@jupyterlab/ui-components';

import { fetchState, IWarning, IWerkhubState } from './api';
import { galleryNotebook, GALLERY_FILE } from './gallery';
import { planWarnings, SeenStore } from './warnings';

const PLUGIN_ID = 'werkhub-lab:plugin';
const DEFAULT_POLL_SECONDS = 60;

const galleryIcon = new LabIcon({
  name: 'werkhub-lab:gallery',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" height="24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<rect x="2" y="3" width="9" height="8" rx="1"/><rect x="13" y="3" width="9" height="8" rx="1"/>' +
    '<rect x="2" y="13" width="9" height="8" rx="1"/><rect x="13" y="13" width="9" height="8" rx="1"/>' +
    '</g></svg>'
});

/** The gallery card's picture in the launcher: four coloured tiles (no external asset). */
const GALLERY_ICON_URL =
  'data:image/svg+xml;base64,' +
  btoa(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="52" height="52">' +
      '<rect x="2" y="3" width="9" height="8" rx="1" fill="#1f6feb"/>' +
      '<rect x="13" y="3" width="9" height="8" rx="1" fill="#f0883e"/>' +
      '<rect x="2" y="13" width="9" height="8" rx="1" fill="#2da44e"/>' +
      '<rect x="13" y="13" width="9" height="8" rx="1" fill="#8250df"/></svg>'
  );

const bookIcon = new LabIcon({
  name: 'werkhub-lab:book',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24" width="24" height="24">' +
    '<g class="jp-icon3" fill="#616161">' +
    '<path d="M4 5h16v15H4z" fill="none" stroke="#616161" stroke-width="2"/>' +
    '<rect x="4" y="5" width="16" height="4"/><rect x="7" y="2" width="2" height="5"/>' +
    '<rect x="15" y="2" width="2" height="5"/><rect x="7" y="12" width="4" height="4"/>' +
    '</g></svg>'
});

namespace CommandIDs {
  export const gallery = 'werkhub:open-gallery';
  export const book = 'werkhub:open-booking';
}

class BookingWarnings {
  constructor() {
    this._seen = new SeenStore(window.localStorage);
  }

  /** One poll: show new warnings, dismiss those that no longer hold. */
  apply(state: IWerkhubState): void {
    this._bookUrl = state.book_url || this._bookUrl;
    const plan = planWarnings(state.warnings, [...this._shown.keys()], this._seen);
    for (const key of plan.dismiss) {
      const id = this._shown.get(key);
      if (id !== undefined) {
        Notification.dismiss(id);
      }
      this._shown.delete(key);
      const extended = state.booking;
      if (extended && key.startsWith(`${extended.id}@`)) {
        Notification.info(
          `Booking ${extended.id} extended: it now runs until ${extended.end_hhmm}.`,
          { autoClose: 8000 }
        );
      }
    }
    for (const warning of plan.show) {
      this._shown.set(warning.key, this._show(warning));
      this._seen.add(warning.key);
    }
  }

  private _show(warning: IWarning): string {
    if (warning.kind === 'reclaim') {
      // a reclaim cannot be extended away: offer the booking page for other GPUs
      return Notification.warning(warning.message, {
        autoClose: false,
        data: { werkhub: warning.key },
        actions: [
          {
            label: 'Book other GPUs',
            caption: 'Open the booking page to book GPUs that are free',
            displayType: 'accent',
            callback: () => {
              window.open(this._bookUrl, '_blank', 'noopener');
            }
          }
        ]
      });
    }
    return Notification.warning(warning.message, {
      autoClose: false,
      data: { werkhub: warning.key },
      actions: [
        {
          label: 'Extend',
          caption: 'Open the booking page to extend this booking',
          displayType: 'accent',
          callback: () => {
            window.open(this._bookUrl, '_blank', 'noopener');
          }
        }
      ]
    });
  }

  get bookUrl(): string {
    return this._bookUrl;
  }

  private _bookUrl = '/services/werkhub/book';
  private _shown = new Map<string, string>();
  private _seen: SeenStore;
}

function startPolling(warnings: BookingWarnings): void {
  let delay = DEFAULT_POLL_SECONDS;
  const poll = async (): Promise<void> => {
    try {
      const state = await fetchState();
      warnings.apply(state);
      delay = state.poll_seconds > 0 ? state.poll_seconds : DEFAULT_POLL_SECONDS;
    } catch (reason) {
      // the service may be restarting: try again at the next poll, quietly
      console.warn('werkhub: could not read notifications', reason);
    }
    window.setTimeout(() => void poll(), delay * 1000);
  };
  void poll();
}

async function openGallery(app: JupyterFrontEnd, cwd: string): Promise<void> {
  const path = cwd ? `${cwd}/${GALLERY_FILE}` : GALLERY_FILE;
  const contents = app.serviceManager.contents;
  try {
    await contents.get(path, { content: false });
  } catch {
    // first use: create it (an existing file is never overwritten)
    await contents.save(path, {
      type: 'notebook',
      format: 'json',
      content: galleryNotebook()
    });
  }
  const widget: any = await app.commands.execute('docmanager:open', {
    path,
    factory: 'Notebook'
  });
  if (widget?.context && widget?.sessionContext) {
    await widget.context.ready;
    await widget.sessionContext.ready;
    app.shell.activateById(widget.id);
    await app.commands.execute('notebook:run-all-cells');
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'werkhub: booking-end warnings and the Template gallery launcher card',
  autoStart: true,
  optional: [ILauncher, ICommandPalette],
  activate: (
    app: JupyterFrontEnd,
    launcher: ILauncher | null,
    palette: ICommandPalette | null
  ) => {
    const warnings = new BookingWarnings();
    app.commands.addCommand(CommandIDs.gallery, {
      label: 'Template gallery',
      caption: 'Browse the werkhub templates and open a copy of one',
      icon: galleryIcon,
      execute: args => openGallery(app, (args['cwd'] as string) || '')
    });
    app.commands.addCommand(CommandIDs.book, {
      label: 'Book a GPU',
      caption: 'Open the werkhub booking calendar',
      icon: bookIcon,
      execute: () => {
        window.open(warnings.bookUrl, '_blank', 'noopener');
      }
    });
    if (launcher) {
      // next to the default kernel's card, at the top: a new user sees the gallery first
      // (cards there show `kernelIconUrl`, not the command's icon)
      launcher.add({
        command: CommandIDs.gallery,
        category: 'Notebook',
        rank: 1,
        args: { kernelIconUrl: GALLERY_ICON_URL }
      });
      launcher.add({ command: CommandIDs.book, category: 'Other', rank: 10 });
    }
    if (palette) {
      palette.addItem({ command: CommandIDs.gallery, category: 'werkhub' });
      palette.addItem({ command: CommandIDs.book, category: 'werkhub' });
    }
    void app.restored.then(() => startPolling(warnings));
  }
};

export default plugin;
