/** The notebook the "Template gallery" launcher card creates (once) and opens. */
export const GALLERY_FILE = 'Template gallery.ipynb';

export function galleryNotebook(): any {
  return {
    nbformat: 4,
    nbformat_minor: 5,
    metadata: {
      kernelspec: { name: 'python3', display_name: 'Python 3 (ipykernel)', language: 'python' },
      language_info: { name: 'python' }
    },
    cells: [
      {
        cell_type: 'markdown',
        id: 'werkhub-gallery-intro',
        metadata: {},
        source:
          '# Template gallery\n\n' +
          'Pick a template and press **Open a copy**: it is copied into your home ' +
          '(never over your own files) and opened. Run the cell below again to refresh.'
      },
      {
        cell_type: 'code',
        id: 'werkhub-gallery-cell',
        metadata: {},
        execution_count: null,
        outputs: [],
        source: 'from werkhub_widgets import gallery\n\ngallery()'
      }
    ]
  };
}
